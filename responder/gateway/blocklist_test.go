package gateway

import (
	"net/netip"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/blockset"
)

// A network's block covers every address in it and none outside; of the
// blocks that cover an address, the one that lasts longest counts, so a
// lapsed narrow block does not hide a standing wide one.
func TestANetworkBlockCoversItsAddresses(t *testing.T) {
	now := time.Now()
	bl := NewBlocklist()
	bl.replace(map[netip.Prefix]time.Time{
		netip.MustParsePrefix("203.0.113.0/24"):    now.Add(time.Hour),
		netip.MustParsePrefix("203.0.113.128/25"):  now.Add(-time.Second),
		netip.MustParsePrefix("2001:db8:1:2::/64"): now.Add(time.Minute),
		netip.MustParsePrefix("198.51.100.7/32"):   now.Add(2 * time.Hour),
	})
	for _, c := range []struct {
		ip   string
		want time.Duration
	}{
		{"203.0.113.1", time.Hour},
		{"203.0.113.200", time.Hour},
		{"::ffff:203.0.113.9", time.Hour},
		{"203.0.114.1", 0},
		{"2001:db8:1:2:dead:beef:0:1", time.Minute},
		{"2001:db8:1:3::1", 0},
		{"198.51.100.7", 2 * time.Hour},
		{"198.51.100.8", 0},
	} {
		blocked, left := bl.Blocked(netip.MustParseAddr(c.ip), now)
		if blocked != (c.want > 0) || blocked && left != c.want {
			t.Errorf("%s: blocked %v for %v, want %v", c.ip, blocked, left, c.want)
		}
	}
	bl.apply(blockset.Event{Op: "unblock", IP: "203.0.113.0/24"})
	if blocked, _ := bl.Blocked(netip.MustParseAddr("203.0.113.1"), now); blocked {
		t.Error("an unblocked network still blocks its addresses")
	}
	bl.apply(blockset.Event{Op: "block", IP: "203.0.113.9/24", ExpiresMS: now.Add(time.Hour).UnixMilli()})
	if blocked, _ := bl.Blocked(netip.MustParseAddr("203.0.113.1"), now); blocked {
		t.Error("an event naming no canonical network was taken as one")
	}
	bl.replace(map[netip.Prefix]time.Time{})
	if blocked, _ := bl.Blocked(netip.MustParseAddr("2001:db8:1:2::1"), now); blocked || bl.Len() != 0 {
		t.Errorf("a full read that found no network left %d entries", bl.Len())
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A rule grouped by prefix blocks the network, not its first address:
// five failures from five addresses of one /64 (or /24) and a sixth
// address of it is refused with AUTH_004, while a neighbour outside it is
// let through. The keys are the runbook's, named by the network.
func TestAPrefixRuleBlocksTheWholeNetwork(t *testing.T) {
	s := newStack(t, stackOptions{rules: `rules:
  - name: network-burst
    match: {action: auth_failed}
    group_by: client_ip
    ipv4_prefix: 24
    ipv6_prefix: 64
    window: 1h
    threshold: 5
    block: {ttl: 300s}
    alert: true
`})
	for _, c := range []struct {
		attackers      []string
		inside, beside string
		network        string
	}{
		{[]string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa::3", "2001:db8:1:2:1:2:3:4", "2001:db8:1:2::5"},
			"2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1", "2001:db8:1:2::/64"},
		{[]string{"198.51.100.1", "198.51.100.20", "198.51.100.33", "198.51.100.44", "198.51.100.250"},
			"198.51.100.77", "198.51.101.1", "198.51.100.0/24"},
	} {
		for _, ip := range c.attackers {
			s.login(ip, "guess")
		}
		s.awaitBlocked(c.inside)
		if a := s.request(c.beside, "GET", "/health", ""); a.status != http.StatusOK {
			t.Errorf("%s, outside %s, got %d", c.beside, c.network, a.status)
		}
		if !s.exists("ip_block:"+c.network) || !s.exists("login_fail:"+c.network) {
			t.Errorf("no ip_block/login_fail key named %s", c.network)
		}
	}
}

// An operator blocks a network with the CLI, or with redis-cli as the
// runbook does for an address; both are enforced for every address in it
// and listed; removing an address inside says the network still blocks
// it, and removing the network lets it through.
func TestOperatorsBlockNetworks(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ctx := context.Background()
	if out, err := s.cli("blocks", "add", "203.0.113.0/24", "192.0.2.7", "--ttl", "10m", "--operator", "alice"); err != nil {
		t.Fatalf("blocks add: %s %v", out, err)
	}
	s.rdb.Set(ctx, "ip_block:2001:db8:ab::/48", "1", 300*time.Second)
	s.rdb.Set(ctx, "ip_block:198.51.100.9/24", "1", 300*time.Second) // not a network's first address: no block
	for _, ip := range []string{"203.0.113.200", "192.0.2.7", "2001:db8:ab:cd::1"} {
		s.awaitBlocked(ip)
	}
	for _, ip := range []string{"203.0.114.1", "192.0.2.8", "2001:db8:ac::1", "198.51.100.9"} {
		if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusOK {
			t.Errorf("%s is covered by no block, got %d", ip, a.status)
		}
	}
	out, err := s.cli("blocks", "list", "--output", "json")
	if err != nil {
		t.Fatal(out)
	}
	var listed []struct{ IP, Rule string }
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("blocks list: %v\n%s", err, out)
	}
	got := fmt.Sprint(listed)
	for _, want := range []string{"{192.0.2.7 manual}", "{203.0.113.0/24 manual}", "{2001:db8:ab::/48 (set by hand)}"} {
		if !strings.Contains(got, want) {
			t.Errorf("blocks list %s lacks %s", got, want)
		}
	}
	out, err = s.cli("blocks", "remove", "203.0.113.200", "--operator", "alice")
	if err != nil || !strings.Contains(out, "still blocked by the network 203.0.113.0/24") {
		t.Fatalf("blocks remove inside a blocked network: %s %v", out, err)
	}
	if out, err := s.cli("blocks", "remove", "203.0.113.0/24", "--operator", "alice"); err != nil || !strings.Contains(out, "unblocked") {
		t.Fatalf("blocks remove of the network: %s %v", out, err)
	}
	s.awaitAllowed("203.0.113.200")
	if out, err := s.cli("blocks", "add", "126.0.0.0/7"); err == nil || !strings.Contains(out, "loopback") {
		t.Errorf("a network holding loopback was blocked: %s", out)
	}
}

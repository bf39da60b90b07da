package cidr

import (
	"net/netip"
	"testing"
)

func TestNetworksAreReadAsFlagsAndRulesWriteThem(t *testing.T) {
	got, err := ParseList([]string{"10.1.2.3/8", " ", "192.0.2.7", "::ffff:198.51.100.1", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "198.51.100.1/32", "2001:db8::/32"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("entry %d: %s, want %s", i, got[i], want[i])
		}
	}
	if !Contains(got, netip.MustParseAddr("10.200.0.1")) || Contains(got, netip.MustParseAddr("11.0.0.1")) {
		t.Error("Contains is wrong about 10.0.0.0/8")
	}
	if _, err := ParseList([]string{"10.0.0.0/8", "not-a-net"}); err == nil || err.Error() != `"not-a-net" is neither a CIDR nor an address` {
		t.Errorf("a bad entry: %v", err)
	}
}

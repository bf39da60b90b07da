package blockset

import (
	"fmt"
	"net/netip"
	"strings"
)

// A block's target is one address or one network, held as a prefix (an
// address is its full-length prefix). In key names and events it is the
// address alone (ip_block:203.0.113.7, as the runbook writes it) or the
// network in canonical form (ip_block:203.0.113.0/24, 2001:db8::/64).

// Host is the target of one address.
func Host(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen())
}

// Target is the target's text in key names and events.
func Target(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// ParseTarget reads an address or a network. A network must be written
// canonically (203.0.113.0/24, not 203.0.113.9/24), so that a target has
// one key name; an IPv4-mapped address is the IPv4 one.
func ParseTarget(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or a network", s)
		}
		return Host(ip), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or a network", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write the IPv4 network", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q is not a network's first address: %s", s, p.Masked())
	}
	return p, nil
}

// Package cidr reads the networks that rules files and flags name
// (--trusted-proxies, --never-block, allowlists) and tests addresses
// against them, one way everywhere.
package cidr

import (
	"fmt"
	"net/netip"
	"strings"
)

// Parse reads a CIDR (masked: 10.1.2.3/8 is 10.0.0.0/8) or a single
// address (a /32 or /128; an IPv4-mapped IPv6 address is its IPv4 one).
func Parse(s string) (netip.Prefix, error) {
	if pf, err := netip.ParsePrefix(s); err == nil {
		return pf.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseList reads a list of networks, skipping empty entries.
func ParseList(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Contains reports whether one of ps holds a.
func Contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// maxForwardedHops bounds the X-Forwarded-For hops examined, so that a huge
// header costs no more than a short one.
const maxForwardedHops = 32

// ClientIP resolves who a request is from: the peer address, unless the peer
// is a trusted proxy, in which case the right-most X-Forwarded-For hop that
// is not itself trusted. Headers from untrusted peers are never read.
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if !peer.IsValid() || !contains(trusted, peer) {
		return peer
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	examined := 0
	for i := len(hops) - 1; i >= 0; i-- {
		list := hops[i]
		for list != "" && examined < maxForwardedHops {
			var hop string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				hop, list = list[j+1:], list[:j]
			} else {
				hop, list = list, ""
			}
			examined++
			addr, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil || addr.Zone() != "" {
				return client // a malformed hop: trust nothing beyond it
			}
			client = addr.Unmap()
			if !contains(trusted, client) {
				return client
			}
		}
	}
	return client
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return addr.WithZone("").Unmap()
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

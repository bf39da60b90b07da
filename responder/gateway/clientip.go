package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/authguard/authguard/responder/cidr"
)

// Headers a trusted proxy may name the client in.
const (
	HeaderXForwardedFor = "x-forwarded-for"
	HeaderForwarded     = "forwarded" // RFC 7239
	HeaderXRealIP       = "x-real-ip"
)

// maxForwardedHops bounds the hops examined, so that a huge header costs no
// more than a short one.
const maxForwardedHops = 32

// ClientIPResolver decides who a request is from: the peer address, unless
// the peer is a trusted proxy, in which case the client named by the
// configured header. For X-Forwarded-For and Forwarded that is the right-most
// hop that is not itself a trusted proxy. Headers from untrusted peers are
// never read.
type ClientIPResolver struct {
	Trusted []netip.Prefix
	// Header is HeaderXForwardedFor (the default when empty),
	// HeaderForwarded or HeaderXRealIP, in lower case.
	Header string
}

// Resolve returns the client address of r; invalid when the peer address
// cannot be read.
func (c ClientIPResolver) Resolve(r *http.Request) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if !peer.IsValid() || !cidr.Contains(c.Trusted, peer) {
		return peer
	}
	// Direct map reads: the header names are already canonical, and
	// canonicalising them on every request is measurable.
	switch c.Header {
	case HeaderXRealIP:
		v := r.Header["X-Real-Ip"]
		if len(v) != 1 {
			return peer // absent or ambiguous
		}
		if a, ok := parseHop(v[0]); ok {
			return a
		}
		return peer
	case HeaderForwarded:
		return c.walk(peer, r.Header["Forwarded"], lastUnquoted, forwardedFor)
	default:
		return c.walk(peer, r.Header["X-Forwarded-For"], lastComma, parseHop)
	}
}

// walk reads a comma-separated hop list (over several header lines) from
// the right, skipping trusted proxies. A hop that does not parse ends the
// walk: nothing beyond it can be trusted, so the last trusted address is
// the answer.
func (c ClientIPResolver) walk(peer netip.Addr, lines []string, last func(string) int, parse func(string) (netip.Addr, bool)) netip.Addr {
	client := peer
	examined := 0
	for i := len(lines) - 1; i >= 0; i-- {
		list := lines[i]
		for list != "" {
			if examined == maxForwardedHops {
				return client
			}
			var hop string
			if j := last(list); j >= 0 {
				hop, list = list[j+1:], list[:j]
			} else {
				hop, list = list, ""
			}
			examined++
			addr, ok := parse(hop)
			if !ok {
				return client
			}
			client = addr
			if !cidr.Contains(c.Trusted, client) {
				return client
			}
		}
	}
	return client
}

func lastComma(list string) int { return strings.LastIndexByte(list, ',') }

// lastUnquoted is the index of the last comma of an RFC 7239 list that is
// not inside a quoted string (for="a,b" is one element), -1 when there is
// none; with an unclosed quote the whole list is one (malformed) element.
func lastUnquoted(list string) int {
	seps, balanced := unquotedSeps(list, ',')
	if !balanced || len(seps) == 0 {
		return -1
	}
	return seps[len(seps)-1]
}

// splitUnquoted splits s at sep outside quoted strings.
func splitUnquoted(s string, sep byte) []string {
	seps, _ := unquotedSeps(s, sep)
	out := make([]string, 0, len(seps)+1)
	start := 0
	for _, i := range seps {
		out = append(out, s[start:i])
		start = i + 1
	}
	return append(out, s[start:])
}

// unquotedSeps returns where sep stands in s outside quoted strings (with
// backslash quoted-pairs), and whether every quote is closed.
func unquotedSeps(s string, sep byte) (seps []int, balanced bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			seps = append(seps, i)
		}
	}
	return seps, !quoted
}

// unquote reads an RFC 7230 quoted-string, or a token as it is.
func unquote(v string) (string, bool) {
	if !strings.HasPrefix(v, `"`) {
		return v, !strings.ContainsRune(v, '"')
	}
	if len(v) < 2 || !strings.HasSuffix(v, `"`) {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		if c == '\\' {
			if i++; i >= len(v)-1 {
				return "", false
			}
			c = v[i]
		} else if c == '"' {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// parseHop reads one X-Forwarded-For or X-Real-IP entry: an address.
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// forwardedFor reads the for= parameter of one RFC 7239 element, such as
// for=192.0.2.60;proto=http or for="[2001:db8:cafe::17]:4711".
// Two for= in one element is malformed.
func forwardedFor(element string) (netip.Addr, bool) {
	var v string
	found := false
	for _, pair := range splitUnquoted(element, ';') {
		k, raw, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "for") {
			continue
		}
		if found {
			return netip.Addr{}, false
		}
		if v, ok = unquote(strings.TrimSpace(raw)); !ok {
			return netip.Addr{}, false
		}
		found = true
	}
	if found {
		if strings.HasPrefix(v, "[") {
			end := strings.IndexByte(v, ']')
			if end < 0 {
				return netip.Addr{}, false
			}
			return parseHop(v[1:end])
		}
		if host, _, err := net.SplitHostPort(v); err == nil {
			v = host
		}
		return parseHop(v) // "unknown" and obfuscated names do not parse
	}
	return netip.Addr{}, false
}

func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().WithZone("").Unmap()
	}
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

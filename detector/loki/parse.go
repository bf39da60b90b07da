// Package loki is authguard's Loki source: it tails Loki over the websocket
// API, turns audit lines into detector events, and reconnects after any
// close or error.
package loki

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/auditsig"
	"github.com/authguard/authguard/responder/clip"
)

// Fields names the JSON fields of an audit line.
type Fields struct {
	Action   string
	ClientIP string
	Username string
	Time     string
	// Attrs are the other fields read into Event.Attrs (session_id,
	// api_key, ...): the fields rules may group by or count.
	Attrs []string
}

// DefaultFields are the audit event's field names in DESIGN.md.
var DefaultFields = Fields{Action: "action", ClientIP: "client_ip", Username: "username", Time: "ts"}

// DefaultAttrs are the other fields read by default: what rules over a
// user agent, a session or an API key group by or count.
var DefaultAttrs = []string{"user_agent", "session_id", "api_key"}

// WithAttrs returns f reading also the fields names (each once).
func (f Fields) WithAttrs(names ...string) Fields {
	attrs := slices.Clone(f.Attrs)
	for _, n := range names {
		if n != "" && !slices.Contains(attrs, n) && n != f.Action && n != f.ClientIP && n != f.Username {
			attrs = append(attrs, n)
		}
	}
	f.Attrs = attrs
	return f
}

// Parser turns audit lines into events. Its zero value is not usable; use
// NewParser.
type Parser struct {
	fields      Fields
	excerpt     int
	hardLimit   int
	useLineTime bool
	verifier    *auditsig.Verifier
}

// Limits on attacker-influenced input.
const (
	// DefaultMaxLineBytes bounds the excerpt of a line an event keeps for
	// evidence and pages.
	DefaultMaxLineBytes = 16 << 10
	// DefaultHardLineBytes is the longest line read at all. Below it every
	// line is read whole for its fields, however long an attacker made its
	// other fields (a user agent of 8 KB doubled by escaping).
	DefaultHardLineBytes = 1 << 20
	maxUsernameBytes     = 256
	maxAttrBytes         = 256
)

// NewParser returns a parser for lines with the given field names. An
// event keeps at most excerpt bytes of its line (DefaultMaxLineBytes when
// zero); lines longer than hardLimit bytes (DefaultHardLineBytes when zero)
// are skipped as too_long, naming their client_ip when it can be read.
// With useLineTime the line's own time field is the event time instead of
// the Loki entry timestamp.
func NewParser(f Fields, excerpt, hardLimit int, useLineTime bool) *Parser {
	if excerpt <= 0 {
		excerpt = DefaultMaxLineBytes
	}
	if hardLimit <= 0 {
		hardLimit = DefaultHardLineBytes
	}
	return &Parser{fields: f, excerpt: excerpt, hardLimit: hardLimit, useLineTime: useLineTime}
}

// Verify makes the parser count only lines whose sig field verifies under
// v (see package auditsig), skipping the others by reason; it returns p.
func (p *Parser) Verify(v *auditsig.Verifier) *Parser {
	p.verifier = v
	return p
}

// signedSkew is how far a signed line's own time may be from its entry's:
// further, it was copied in later or from elsewhere.
const signedSkew = 10 * time.Minute

// HardLimit is the longest line the parser reads.
func (p *Parser) HardLimit() int { return p.hardLimit }

// SkipError says why a line was skipped; Reason is a short metric label.
type SkipError struct {
	Reason string
	Detail string
}

func (e *SkipError) Error() string { return e.Reason + ": " + e.Detail }

// Skip reasons, used as metric labels.
const (
	SkipTooLong     = "too_long"
	SkipNotJSON     = "not_json"
	SkipNoAction    = "no_action"
	SkipNoClientIP  = "no_client_ip"
	SkipBadClientIP = "bad_client_ip"
	SkipBadTime     = "bad_time"
	// With signature checks: a line without sig, with a key not held,
	// with a wrong signature, or signed long before or after its entry.
	SkipSigUnsigned = "sig_" + auditsig.Unsigned
	SkipSigUnknown  = "sig_" + auditsig.UnknownKey
	SkipSigBad      = "sig_" + auditsig.BadSig
	SkipSigReplayed = "sig_replayed"
)

// Parse turns one line with its entry timestamp into an event, or returns a
// *SkipError. It reads the line without reflection or copies of fields it
// does not need: it runs once per audit line.
func (p *Parser) Parse(ts time.Time, line string) (detector.Event, error) {
	if len(line) > p.hardLimit {
		detail := "line of " + strconv.Itoa(len(line)) + " bytes, over " + strconv.Itoa(p.hardLimit)
		if ip := p.clientIP(line); ip != "" {
			detail += ", from client_ip " + ip
		}
		return detector.Event{}, &SkipError{SkipTooLong, detail}
	}
	f, ok := p.read(line)
	if !ok {
		return detector.Event{}, &SkipError{SkipNotJSON, "line is not a JSON object"}
	}
	action, ip, user, lineTS := f.action, f.ip, f.user, f.ts
	if action == "" {
		return detector.Event{}, &SkipError{SkipNoAction, "no " + p.fields.Action + " field"}
	}
	if ip == "" {
		return detector.Event{}, &SkipError{SkipNoClientIP, "no " + p.fields.ClientIP + " field"}
	}
	addr, ok := ParseClientAddr(ip)
	if !ok {
		return detector.Event{}, &SkipError{SkipBadClientIP, "client address " + clip.String(ip, 64) + " is not an IP"}
	}
	if p.verifier != nil {
		if err := p.verify(ts, f); err != nil {
			return detector.Event{}, err
		}
	}
	switch action { // share the common values instead of a copy per line
	case detector.ActionAuthFailed:
		action = detector.ActionAuthFailed
	case detector.ActionAuthSucceeded:
		action = detector.ActionAuthSucceeded
	}
	excerpt := line
	if len(line) > p.excerpt {
		// A copy, so that the long line itself is not kept alive.
		excerpt = strings.Clone(clip.String(line, p.excerpt))
	}
	ev := detector.Event{Time: ts, Action: clip.String(action, 64), IP: addr, Username: clip.String(user, maxUsernameBytes), Attrs: f.attrs, Line: excerpt}
	if p.useLineTime {
		t, err := time.Parse(time.RFC3339Nano, lineTS)
		if err != nil {
			return detector.Event{}, &SkipError{SkipBadTime, "time field " + clip.String(lineTS, 64) + " is not RFC 3339"}
		}
		ev.Time = t
	}
	return ev, nil
}

// lineFields are the fields Parse reads from a line, as they are spelled
// there.
type lineFields struct {
	action, ip, user, ts, reqID, sig string
	attrs                            []detector.Attr
}

// read takes the fields Parse needs from a JSON object line; ok is false
// when the line is not one JSON object.
func (p *Parser) read(line string) (f lineFields, ok bool) {
	d := frameDecoder{b: unsafe.Slice(unsafe.StringData(line), len(line))} // read only
	field := func(dst *string) error {
		if d.peek() != '"' {
			return d.skip() // not a string: as if absent
		}
		v, err := d.view()
		*dst = string(v)
		return err
	}
	if d.peek() != '{' {
		return f, false
	}
	err := d.object(func(key []byte) error {
		switch string(key) {
		case p.fields.Action:
			return field(&f.action)
		case p.fields.ClientIP:
			return field(&f.ip)
		case p.fields.Username:
			return field(&f.user)
		case p.fields.Time:
			if p.useLineTime || p.verifier != nil {
				return field(&f.ts)
			}
		case "request_id":
			if p.verifier != nil {
				return field(&f.reqID)
			}
		case "sig":
			if p.verifier != nil {
				return field(&f.sig)
			}
		}
		for _, name := range p.fields.Attrs {
			if string(key) == name && d.peek() == '"' {
				v, err := d.view()
				if len(v) > 0 && !slices.ContainsFunc(f.attrs, func(a detector.Attr) bool { return a.Name == name }) {
					// The first of repeated keys; action, client_ip and
					// username take the last (not yet made alike).
					f.attrs = append(f.attrs, detector.Attr{Name: name, Value: clip.String(string(v[:min(len(v), maxAttrBytes+utf8.UTFMax)]), maxAttrBytes)})
				}
				return err
			}
		}
		return d.skip()
	})
	if err != nil {
		return f, false
	}
	d.ws()
	return f, d.i == len(d.b)
}

// verify checks a signed line's signature, and that its own time is near
// its entry's (a signed line copied into Loki later, or from elsewhere, is
// not).
func (p *Parser) verify(ts time.Time, f lineFields) *SkipError {
	if why := p.verifier.Verify(auditsig.Fields{TS: f.ts, Action: f.action, ClientIP: f.ip, Username: f.user, RequestID: f.reqID}, f.sig); why != "" {
		return &SkipError{"sig_" + why, "audit line from " + clip.String(f.ip, 64) + ": " + why}
	}
	if t, err := time.Parse(time.RFC3339Nano, f.ts); !ts.IsZero() && (err != nil || t.Sub(ts) > signedSkew || ts.Sub(t) > signedSkew) {
		return &SkipError{SkipSigReplayed, "signed audit line from " + clip.String(f.ip, 64) + " stamped " + clip.String(f.ts, 40) + ", entry at " + ts.UTC().Format(time.RFC3339)}
	}
	return nil
}

// ParseClientAddr reads a client address however an emitter spelled it,
// so that every spelling of one address is one key: IPv4-mapped
// (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) IPv6 are the IPv4
// address, IPv6 in any case and with or without leading zeros is one
// address, an IPv4 address with zero-padded octets (203.000.113.007) is
// read in decimal, and brackets or a port ([2001:db8::1]:443,
// 203.0.113.7:5000) are dropped. An address with a zone is not a client.
func ParseClientAddr(s string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			addr, err = ap.Addr(), nil
		} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			addr, err = netip.ParseAddr(s[1 : len(s)-1])
		} else if a, ok := paddedIPv4(s); ok {
			addr, err = a, nil
		}
	}
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	addr = addr.Unmap()
	if addr.Is6() {
		// IPv4-compatible (deprecated, RFC 4291): 96 zero bits, then the
		// IPv4 address; :: and ::1 are not.
		b := addr.As16()
		if [12]byte(b[:12]) == [12]byte{} && (b[12] != 0 || b[13] != 0 || b[14] != 0 || b[15] > 1) {
			addr = netip.AddrFrom4([4]byte(b[12:]))
		}
	}
	return addr, true
}

// paddedIPv4 reads a dotted quad whose octets may have leading zeros, in
// decimal (netip refuses them as ambiguous).
func paddedIPv4(s string) (netip.Addr, bool) {
	var b [4]byte
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	for i, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return netip.Addr{}, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 255 || p[0] == '+' || p[0] == '-' {
			return netip.Addr{}, false
		}
		b[i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}

// clientIP reads the client_ip field of a line it will not parse, for the
// log; "" when there is none to read.
func (p *Parser) clientIP(line string) string {
	d := frameDecoder{b: unsafe.Slice(unsafe.StringData(line), len(line))} // read only
	var ip string
	d.object(func(key []byte) error {
		if string(key) == p.fields.ClientIP && d.peek() == '"' {
			v, err := d.view()
			ip = clip.String(string(v), 64)
			if err == nil {
				return errFound
			}
			return err
		}
		return d.skip()
	})
	return ip
}

var errFound = errors.New("found")

// IsSkip reports whether err is a *SkipError and returns it.
func IsSkip(err error) (*SkipError, bool) {
	var se *SkipError
	ok := errors.As(err, &se)
	return se, ok
}

// LogcliEntry reads one line of `logcli --output=jsonl`, {"labels":{...},
// "timestamp":"...","line":"..."}: its entry timestamp and its line,
// passing over the labels without building them. ok is false when text is
// not such an entry (a raw audit line, say).
func LogcliEntry(text string) (ts, line string, ok bool) {
	d := frameDecoder{b: unsafe.Slice(unsafe.StringData(text), len(text))} // read only
	if d.peek() != '{' {
		return "", "", false
	}
	hasLine := false
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "line":
			if d.peek() != '"' {
				return d.skip()
			}
			v, err := d.str()
			line, hasLine = v, err == nil
			return err
		case "timestamp":
			if d.peek() != '"' {
				return d.skip()
			}
			v, err := d.str()
			ts = v
			return err
		}
		return d.skip()
	})
	return ts, line, err == nil && hasLine && ts != ""
}

package detector

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/dchest/siphash"
)

// keyed says the rule keeps a table of keys: by address or by a field.
func (r Rule) keyed() bool { return r.PerIP || r.GroupBy != "" }

// valueHash is the keyed hash of ev's field (its low bit clear), false when
// ev has none. A keyed hash, so that an attacker cannot choose values that
// count as one; its key goes into checkpoints, so that a restarted daemon
// recognises the values it saw before.
func (e *Engine) valueHash(field string, ev *Event) (uint64, bool) {
	if field == "client_ip" {
		if !ev.IP.IsValid() {
			return 0, false
		}
		a := ev.IP.As16()
		return siphash.Hash(e.k0, e.k1, a[:]) &^ 1, true
	}
	v := ev.Field(field)
	if v == "" {
		return 0, false
	}
	return siphash.Hash(e.k0, e.k1, []byte(fold(field, v))) &^ 1, true
}

// groupKey is the table key of ev's value of field: a 128-bit keyed hash,
// so that any value, however long, costs one fixed-size key and no two
// values an attacker can find share one.
func (e *Engine) groupKey(field string, ev *Event) ([16]byte, bool) {
	var k [16]byte
	v := ev.Field(field)
	if v == "" {
		return k, false
	}
	lo, hi := siphash.Hash128(e.k1, e.k0, []byte(fold(field, v)))
	binary.LittleEndian.PutUint64(k[:8], lo)
	binary.LittleEndian.PutUint64(k[8:], hi)
	return k, true
}

// fold makes the spellings of one account one value: usernames are
// compared without case (Alice and alice are one account to most login
// services, and an attacker must not split a count by changing case).
// Other fields (session ids, keys) are compared as written.
func fold(field, v string) string {
	if field != "username" {
		return v
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return strings.ToLower(v)
		}
	}
	return v
}

// grouped completes the decision d of a rule grouped by a field, made on
// ev, whose window holds srcs: it names the group and its sources and, for
// a rule that blocks its sources, adds a block of each. The first
// decision of an incident blocks every source in the window; each later
// one (a renewal) the source of its event.
func (r *ruleState) grouped(d Decision, ev *Event, srcs [][16]byte, out []Decision) []Decision {
	// One spelling per group: pages, incidents and evidence name it alike.
	d.GroupBy, d.Key = r.GroupBy, fold(r.GroupBy, ev.Field(r.GroupBy))
	d.Sources = sourcesOf(srcs)
	if d.Kind != KindBlock {
		return append(out, d)
	}
	d.Kind, d.Protects = KindAlert, r.Protect
	var blocks []netip.Addr
	switch {
	case !r.BlockSources:
	case d.Renewal:
		blocks = []netip.Addr{ev.IP}
	default:
		blocks = d.Sources
	}
	out = append(out, d)
	if r.Protect > 0 {
		p := d
		p.Kind, p.Alert, p.TTL, p.Sources, p.Protects = KindProtect, false, r.Protect, nil, 0
		out = append(out, p)
	}
	for _, a := range blocks {
		if !a.IsValid() {
			continue
		}
		b := d
		b.Kind, b.Alert, b.Renewal, b.Escalation = KindBlock, false, false, false
		b.GroupBy, b.Sources, b.SourceOf = "", nil, r.GroupBy+" "+d.Key
		b.Net = netip.PrefixFrom(a, a.BitLen())
		b.Key = a.String()
		out = append(out, b)
	}
	return out
}

// sourcesOf lists the addresses of a window's entries, each once, in the
// order of their latest entry.
func sourcesOf(srcs [][16]byte) []netip.Addr {
	out := make([]netip.Addr, 0, len(srcs))
	for i := len(srcs) - 1; i >= 0; i-- {
		if srcs[i] == ([16]byte{}) {
			continue // an event without an address
		}
		if a := netip.AddrFrom16(srcs[i]).Unmap(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Reverse(out)
	return out
}

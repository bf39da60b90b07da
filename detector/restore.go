package detector

import (
	"net/netip"
	"time"
)

// ActiveBlocks returns a decision for every block the engine knows to stand
// at now, each with what is left of it as its TTL: what to write again
// when Redis comes back empty. They are not renewals (the store writes them
// whole: the block, its tally and its metadata) and page nobody.
func (e *Engine) ActiveBlocks(now time.Time) []Decision {
	var out []Decision
	at := now.UnixNano()
	for _, r := range e.rules {
		if !r.PerIP || r.ttl <= 0 || r.DryRun {
			continue
		}
		t := r.keys
		for i := range t.slots {
			s := &t.slots[i]
			if s.blockedUntil <= at {
				continue
			}
			if j, ok := t.lookup(s.key); !ok || j != int32(i) {
				continue // a freed slot
			}
			addr := netip.AddrFrom16(s.key).Unmap()
			d := Decision{Time: now, Rule: r.Name, Key: targetKey(r.target(addr)), Net: r.target(addr), Kind: KindBlock,
				TTL: time.Duration(s.blockedUntil - at), Count: int(s.count), Offence: int(s.offences),
				FirstSeen: time.Unix(0, s.first).UTC(), LastSeen: time.Unix(0, s.last).UTC(),
				Match: r.Match, Threshold: r.Threshold, Window: r.Window, SeverityRank: int(s.level), Restored: true}
			d.RatePerMinute = rate(s.count, s.first, s.last)
			if int(s.level) < len(e.severity) {
				d.Severity = e.severity[s.level].Level
			}
			out = append(out, d)
		}
	}
	return out
}

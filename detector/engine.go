package detector

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Engine evaluates rules over events. It is not safe for concurrent use: one
// goroutine owns it and feeds it events in order.
type Engine struct {
	rules    []*ruleState
	severity []SeverityLevel
	allow    []netip.Prefix
	k0, k1   uint64 // the SipHash key of distinct values, kept in checkpoints

	takeover  Takeover
	takeovers map[netip.Addr]*takeover

	tolerance int64 // how far behind the newest event an event still counts
	future    int64 // how far ahead of the clock an event may be stamped
	watermark int64 // the newest event time seen, never past the clock
	late      uint64
	clamped   uint64
}

type ruleState struct {
	Rule
	window int64 // nanoseconds
	ttl    int64
	keys   *table // per-IP rules
	global *table // global rules: one slot under the zero key
}

// New validates cfg and returns an engine with empty windows.
func New(cfg Config) (*Engine, error) {
	return build(cfg, nil)
}

// Reload returns an engine for cfg that keeps the window state of every
// rule whose counting is unchanged (same name, match, grouping, window,
// threshold and distinct field); a rule whose block TTL, alerting or
// escalation changed keeps its windows too. The receiver must not be used
// afterwards.
func (e *Engine) Reload(cfg Config) (*Engine, error) {
	return build(cfg, e)
}

// sameCounting reports whether two rules count the same way, so that one's
// windows are valid for the other.
func sameCounting(a, b Rule) bool {
	return a.Name == b.Name && a.Match == b.Match && a.PerIP == b.PerIP && a.GroupBy == b.GroupBy && a.IPv4Prefix == b.IPv4Prefix &&
		a.IPv6Prefix == b.IPv6Prefix && a.Window == b.Window && a.Threshold == b.Threshold && a.Distinct == b.Distinct &&
		a.MinSuccessRatio == b.MinSuccessRatio
}

// Validate checks cfg as New does, without building an engine (whose
// tables take megabytes): for checking a rules file that is not run yet.
func Validate(cfg Config) error {
	if cfg.MaxKeys > MaxKeysLimit {
		return fmt.Errorf("max keys %d: at most %d per rule", cfg.MaxKeys, MaxKeysLimit)
	}
	seen := map[string]bool{}
	for _, r := range cfg.Rules {
		if err := r.validate(); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("rule %q: duplicate name", r.Name)
		}
		seen[r.Name] = true
	}
	return cfg.checkBudget()
}

func build(cfg Config, old *Engine) (*Engine, error) {
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	e := &Engine{allow: cfg.Allow, tolerance: int64(cfg.Tolerance), takeover: cfg.Takeover}
	if old != nil {
		e.k0, e.k1 = old.k0, old.k1 // distinct values are hashed with it
		e.takeovers = old.takeovers
	} else {
		e.takeovers = map[netip.Addr]*takeover{}
		seed := maphash.MakeSeed()
		e.k0, e.k1 = maphash.Comparable(seed, 0), maphash.Comparable(seed, 1)
	}
	if e.tolerance <= 0 {
		e.tolerance = int64(DefaultTolerance)
	}
	if e.future = int64(cfg.FutureBound); e.future <= 0 {
		e.future = int64(DefaultFutureBound)
	}
	if old != nil {
		e.watermark, e.late, e.clamped = old.watermark, old.late, old.clamped
	}
	e.severity = append([]SeverityLevel(nil), cfg.Severity...)
	if len(e.severity) == 0 {
		e.severity = append(e.severity, DefaultSeverity...)
	}
	sort.SliceStable(e.severity, func(i, j int) bool { return e.severity[i].Above > e.severity[j].Above })
	caps := cfg.Caps()
	for i, r := range cfg.Rules {
		if r.IPv4Prefix == 0 {
			r.IPv4Prefix = 32
		}
		if r.IPv6Prefix == 0 {
			r.IPv6Prefix = 128
		}
		// A rule that protects its account holds it as a block is held:
		// renewed while the rule fires, its tally ending with it.
		rs := &ruleState{Rule: r, window: int64(r.Window), ttl: int64(max(r.BlockTTL, r.Protect))}
		distinct := r.Distinct != ""
		if prev := old.rule(r.Name); prev != nil && sameCounting(prev.Rule, r) {
			rs.keys, rs.global = prev.keys, prev.global
			if r.keyed() {
				rs.keys.resize(caps[i])
			}
		} else if r.keyed() {
			rs.keys = newTable(caps[i], r.Threshold, distinct, r.GroupBy != "")
		} else {
			rs.global = newTable(1, r.Threshold, distinct, false)
		}
		e.rules = append(e.rules, rs)
	}
	return e, nil
}

func (e *Engine) rule(name string) *ruleState {
	if e == nil {
		return nil
	}
	for _, r := range e.rules {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func (r Rule) validate() error {
	switch {
	case r.Name == "":
		return fmt.Errorf("rule without a name")
	case r.Window <= 0:
		return fmt.Errorf("rule %q: window must be positive", r.Name)
	case r.Threshold < 1 || r.Threshold > math.MaxUint16:
		return fmt.Errorf("rule %q: threshold must be between 1 and %d", r.Name, math.MaxUint16)
	case r.BlockTTL < 0:
		return fmt.Errorf("rule %q: block ttl must not be negative", r.Name)
	case r.BlockTTL > 0 && !r.PerIP && r.GroupBy == "":
		return fmt.Errorf("rule %q: a global rule cannot block", r.Name)
	case r.PerIP && r.GroupBy != "":
		return fmt.Errorf("rule %q: grouped by the address and by %s at once", r.Name, r.GroupBy)
	case r.GroupBy == "client_ip" || r.GroupBy == "action" || r.Distinct == "action":
		return fmt.Errorf("rule %q: %s%s cannot key a group", r.Name, r.GroupBy, r.Distinct)
	case r.GroupBy != "" && r.GroupBy == r.Distinct:
		return fmt.Errorf("rule %q: grouped by and counting distinct %s", r.Name, r.GroupBy)
	case r.BlockTTL > 0 && r.GroupBy != "" && !r.BlockSources:
		return fmt.Errorf("rule %q: grouped by %s: a block applies to its sources (scope: sources)", r.Name, r.GroupBy)
	case r.Protect < 0 || (r.Protect > 0 && r.GroupBy != "username"):
		return fmt.Errorf("rule %q: only a rule grouped by username protects its account", r.Name)
	case r.BlockSources && (r.GroupBy == "" || r.BlockTTL <= 0):
		return fmt.Errorf("rule %q: blocking the sources needs a group_by field and a block ttl", r.Name)
	case r.MinSuccessRatio < 0 || r.MinSuccessRatio > 1 || (r.MinSuccessRatio > 0 && r.Distinct == ""):
		return fmt.Errorf("rule %q: min_success_ratio must be between 0 and 1 and needs distinct", r.Name)
	case r.Escalate.Factor < 0 || r.Escalate.Max < 0 || r.Escalate.Remember < 0:
		return fmt.Errorf("rule %q: escalation settings must not be negative", r.Name)
	case r.IPv4Prefix < 0 || r.IPv4Prefix > 32 || r.IPv6Prefix < 0 || r.IPv6Prefix > 128:
		return fmt.Errorf("rule %q: prefix length out of range", r.Name)
	}
	return nil
}

// Stats reports the engine's bounded-memory bookkeeping.
type Stats struct {
	// TrackedKeys is the number of keys held across all rules.
	TrackedKeys int
	// Evictions counts keys dropped to stay under the cap since New.
	Evictions uint64
	// Late counts events dropped for arriving further behind the newest
	// event than the tolerance.
	Late uint64
	// Future counts events stamped further ahead of the clock than
	// FutureBound, counted at the clock's time instead.
	Future uint64
}

// Future is Stats().Future, cheaply: how many events were stamped too far
// ahead of the clock and counted at its time.
func (e *Engine) Future() uint64 { return e.clamped }

// Stats returns current counters.
func (e *Engine) Stats() Stats {
	s := Stats{Late: e.late, Future: e.clamped}
	for _, r := range e.rules {
		if r.keys != nil {
			s.TrackedKeys += r.keys.len()
			s.Evictions += r.keys.evictions
		}
	}
	return s
}

// Observe counts ev in every matching rule and appends the resulting
// decisions to out. now is the clock: the lateness watermark never passes
// it, so a line stamped ahead (a writer chooses its stamp) cannot make the
// events after it late, and an event stamped more than FutureBound ahead
// counts at now.
func (e *Engine) Observe(ev Event, now time.Time, out []Decision) []Decision {
	t, clock := ev.Time.UnixNano(), now.UnixNano()
	if t > clock+e.future {
		e.clamped++
		t, ev.Time = clock, now
	}
	if t < e.watermark-e.tolerance {
		e.late++ // too late to count where it belongs
		return out
	}
	e.watermark = max(e.watermark, min(t, clock))
	allowed := e.allowed(ev.IP)
	for _, r := range e.rules {
		if r.Match != "" && r.Match != ev.Action {
			continue
		}
		var h uint64
		if r.Distinct != "" {
			var ok bool
			if h, ok = e.valueHash(r.Distinct, &ev); !ok {
				continue
			}
			if ev.Action == ActionAuthSucceeded {
				h |= 1
			}
		}
		var tab *table
		var key [16]byte
		var addr netip.Addr
		switch {
		case r.PerIP:
			if !ev.IP.IsValid() || allowed {
				continue
			}
			addr = r.group(ev.IP)
			key = addr.As16()
			tab = r.keys
		case r.GroupBy != "":
			var ok bool
			if key, ok = e.groupKey(r.GroupBy, &ev); !ok || allowed {
				continue
			}
			tab = r.keys
		default:
			tab = r.global
		}
		s, ents := tab.get(key, t)
		var src [16]byte
		if ents.srcs != nil {
			src = ev.IP.As16()
		}
		now, fires := r.observe(s, &ents, t, h, &src)
		if !fires {
			continue
		}
		d, ok := r.fire(s, ents.hashes, t, now, e.severityLevel)
		if !ok {
			continue
		}
		d.Time = ev.Time
		d.Sample = ev.Line
		switch {
		case r.PerIP:
			d.Net = r.target(addr)
			d.Key = targetKey(d.Net)
		case r.GroupBy != "":
			out = r.grouped(d, &ev, ents.srcs[:s.n], out)
			continue
		}
		out = append(out, d)
	}
	if e.takeover.Name != "" && ev.Action == ActionAuthSucceeded && ev.Username != "" && ev.IP.IsValid() && !allowed {
		out = e.checkTakeover(&ev, t, out)
	}
	return out
}

// Reset gives ip a clean slate in every per-IP rule, as if it had never been
// seen. It is called when an operator unblocks the address.
func (e *Engine) Reset(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	for _, r := range e.rules {
		if r.PerIP {
			r.keys.remove(r.group(ip).As16())
		}
	}
}

// observe adds one event at t to slot s and decides.
// It returns the newest event's time and whether the rule fires; the
// decision itself is made by fire, only then (a Decision is large, and
// most events decide nothing).
func (r *ruleState) observe(s *slot, e *entries, t int64, h uint64, src *[16]byte) (int64, bool) {
	times, hashes := e.times, e.hashes
	if s.blockedUntil != 0 && t >= s.blockedUntil {
		// The tally expires with the block: a clean slate.
		s.clear()
		s.blockedUntil = 0
	}
	if s.n > 0 && times[s.n-1] <= t-r.window {
		// Nothing left in the window: the run of failures starts anew, but a
		// standing block still stands.
		s.clear()
	}
	if hashes != nil {
		s.insertDistinct(e, t, h, src)
	} else {
		s.insert(e, t, src)
	}
	// An event that arrives out of order (within the tolerance) is counted
	// where it belongs; the window that matters ends at the newest event.
	now := max(t, times[s.n-1])
	fires := int(s.n) == len(times) && times[0] > now-r.window
	if fires && r.MinSuccessRatio > 0 {
		ok := 0
		for _, h := range hashes[:s.n] {
			ok += int(h & 1)
		}
		fires = float64(ok) >= r.MinSuccessRatio*float64(s.n)
	}
	if !fires {
		s.active = false
	}
	return now, fires
}

// fire makes the decision of a rule that fires for slot s on an event at t
// (now is the newest event): a block, a renewal or escalation of one, or an
// alert unless the incident is already open and no worse.
func (r *ruleState) fire(s *slot, hashes []uint64, t, now int64, severity func(float64) (int, string)) (Decision, bool) {
	d := Decision{
		Rule:      r.Name,
		Count:     int(s.count),
		FirstSeen: time.Unix(0, s.first).UTC(),
		LastSeen:  time.Unix(0, s.last).UTC(),
		Alert:     r.Alert,
		Match:     r.Match,
		Threshold: r.Threshold,
		Window:    r.Window,
	}
	if hashes != nil {
		d.Distinct, d.DistinctOf = int(s.n), r.Distinct
	}
	d.RatePerMinute = rate(s.count, s.first, s.last)
	level, name := severity(d.RatePerMinute)
	d.Severity, d.SeverityRank = name, level
	// An open incident whose rate reaches a higher severity escalates;
	// it never becomes a second incident.
	escalates := level < int(s.level)
	if r.ttl > 0 {
		d.Kind = KindBlock
		d.DryRun = r.DryRun
		d.Renewal = s.blockedUntil != 0
		if !d.Renewal {
			// A new block: one more offence, unless the last one is
			// older than the escalation memory.
			if s.offences > 0 && r.Escalate.Remember > 0 && t-s.lastOffence > int64(r.Escalate.Remember) {
				s.offences = 0
			}
			if s.offences < math.MaxUint16 {
				s.offences++
			}
			s.lastOffence = t
		}
		d.Offence = int(s.offences)
		d.TTL = r.Escalate.ttl(r.BlockTTL, d.Offence)
		s.blockedUntil = now + int64(max(d.TTL, r.Protect))
		d.Escalation = d.Renewal && escalates
		if !d.Renewal || escalates {
			s.level = uint8(level)
		}
		return d, true
	}
	d.Kind = KindAlert
	if s.active {
		if !escalates {
			return Decision{}, false // the incident is open and no worse
		}
		d.Escalation = true
	}
	s.active = true
	s.level = uint8(level)
	return d, true
}

func rate(count uint32, first, last int64) float64 {
	minutes := float64(last-first) / float64(time.Minute)
	if minutes < 1 {
		minutes = 1
	}
	return float64(count) / minutes
}

// severityLevel maps a rate to a severity and its rank (0 the most severe).
func (e *Engine) severityLevel(rate float64) (int, string) {
	for i, l := range e.severity {
		if rate > l.Above {
			return i, l.Level
		}
	}
	last := len(e.severity) - 1
	return last, e.severity[last].Level
}

func (e *Engine) allowed(ip netip.Addr) bool {
	return slices.ContainsFunc(e.allow, func(p netip.Prefix) bool { return p.Contains(ip) })
}

func (r *ruleState) group(ip netip.Addr) netip.Addr {
	bits := r.IPv6Prefix
	if ip.Is4() {
		bits = r.IPv4Prefix
	}
	if bits == ip.BitLen() {
		return ip
	}
	p, _ := ip.Prefix(bits)
	return p.Addr()
}

// target is what a block of addr's group applies to: the network of the
// rule's prefix that starts at addr (a group address), or addr alone.
func (r *ruleState) target(addr netip.Addr) netip.Prefix {
	bits := r.IPv6Prefix
	if addr.Is4() {
		bits = r.IPv4Prefix
	}
	return netip.PrefixFrom(addr, bits)
}

// targetKey is a target's text: the address alone, or the network.
func targetKey(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

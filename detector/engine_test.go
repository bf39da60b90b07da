package detector

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func sec010() Rule {
	return Rule{Name: "failed-login-burst", Match: ActionAuthFailed, PerIP: true,
		Window: 24 * time.Hour, Threshold: 5, BlockTTL: 5 * time.Minute, Alert: true}
}

func mustEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func failed(ip string, at time.Duration) Event {
	return Event{Time: t0.Add(at), Action: ActionAuthFailed, IP: netip.MustParseAddr(ip)}
}

func TestRunbookSEC010(t *testing.T) {
	tests := []struct {
		name   string
		events []Event
		want   []string // "rule key kind count renewal" per decision, in order
	}{
		{"four failures in a day do not block",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", time.Hour), failed("203.0.113.7", 2*time.Hour), failed("203.0.113.7", 23*time.Hour)},
			nil},
		{"the fifth failure within a day blocks for five minutes",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 1), failed("203.0.113.7", 2), failed("203.0.113.7", 3), failed("203.0.113.7", 4)},
			[]string{"failed-login-burst 203.0.113.7 block 5 false"}},
		{"failures spread over more than a day never reach five at once",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 6*time.Hour), failed("203.0.113.7", 12*time.Hour), failed("203.0.113.7", 18*time.Hour), failed("203.0.113.7", 24*time.Hour)},
			nil},
		{"another IP's failures do not add up",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 1), failed("198.51.100.1", 2), failed("203.0.113.7", 3), failed("203.0.113.7", 4)},
			nil},
		{"a failure during the block renews it",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 1), failed("203.0.113.7", 2), failed("203.0.113.7", 3), failed("203.0.113.7", 4), failed("203.0.113.7", time.Minute)},
			[]string{"failed-login-burst 203.0.113.7 block 5 false", "failed-login-burst 203.0.113.7 block 6 true"}},
		{"the tally expires with the block: five fresh attempts after it",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 1), failed("203.0.113.7", 2), failed("203.0.113.7", 3), failed("203.0.113.7", 4),
				failed("203.0.113.7", 6*time.Minute), failed("203.0.113.7", 7*time.Minute), failed("203.0.113.7", 8*time.Minute), failed("203.0.113.7", 9*time.Minute)},
			[]string{"failed-login-burst 203.0.113.7 block 5 false"}},
		{"successful logins do not count",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 1), {Time: t0.Add(2), Action: ActionAuthSucceeded, IP: netip.MustParseAddr("203.0.113.7")}, failed("203.0.113.7", 3), failed("203.0.113.7", 4)},
			nil},
		{"IPv4-mapped and plain IPv4 are one client",
			[]Event{failed("203.0.113.7", 0), failed("203.0.113.7", 1), failed("203.0.113.7", 2), failed("203.0.113.7", 3), {Time: t0.Add(4), Action: ActionAuthFailed, IP: netip.MustParseAddr("::ffff:203.0.113.7").Unmap()}},
			[]string{"failed-login-burst 203.0.113.7 block 5 false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEngine(t, Config{Rules: []Rule{sec010()}})
			var got []string
			for _, ev := range tt.events {
				for _, d := range observe(e, ev, nil) {
					got = append(got, fmt.Sprintf("%s %s %s %d %v", d.Rule, d.Key, d.Kind, d.Count, d.Renewal))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("decisions = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBlockDecisionCarriesTTLSeverityAndTimes(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}})
	var ds []Decision
	for i := range 5 {
		ds = observe(e, failed("203.0.113.7", time.Duration(i)*time.Second), ds)
	}
	if len(ds) != 1 {
		t.Fatalf("got %d decisions, want 1", len(ds))
	}
	d := ds[0]
	if d.TTL != 5*time.Minute || d.Expires() != t0.Add(4*time.Second+5*time.Minute) {
		t.Errorf("ttl %v expires %v", d.TTL, d.Expires())
	}
	if d.Severity != "P3" || !d.FirstSeen.Equal(t0) || !d.LastSeen.Equal(t0.Add(4*time.Second)) {
		t.Errorf("severity %s first %v last %v", d.Severity, d.FirstSeen, d.LastSeen)
	}
	if !d.Alert || d.Net != netip.MustParsePrefix("203.0.113.7/32") {
		t.Errorf("alert %v net %v", d.Alert, d.Net)
	}
}

func TestSeverityFollowsAttemptRate(t *testing.T) {
	rule := Rule{Name: "burst", Match: ActionAuthFailed, PerIP: true, Window: time.Hour, Threshold: 1, BlockTTL: time.Hour}
	for _, tt := range []struct {
		name     string
		perMin   int
		severity string
	}{
		{"101 attempts in a minute is P1", 101, "P1"},
		{"100 attempts in a minute is P2", 100, "P2"},
		{"50 attempts in a minute is P2", 50, "P2"},
		{"49 attempts in a minute is P3", 49, "P3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEngine(t, Config{Rules: []Rule{rule}})
			var last Decision
			for i := range tt.perMin {
				ds := observe(e, failed("203.0.113.7", time.Duration(i)*time.Minute/time.Duration(tt.perMin)), nil)
				last = ds[len(ds)-1]
			}
			if last.Severity != tt.severity {
				t.Errorf("severity %s at %.1f/min, want %s", last.Severity, last.RatePerMinute, tt.severity)
			}
		})
	}
}

func TestGlobalAlertFiresOncePerIncident(t *testing.T) {
	rule := Rule{Name: "failed-login-surge", Match: ActionAuthFailed, Window: 5 * time.Minute, Threshold: 3, Alert: true}
	e := mustEngine(t, Config{Rules: []Rule{rule}})
	var ds []Decision
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"} {
		ds = observe(e, failed(ip, time.Duration(i)*time.Second), ds)
	}
	if len(ds) != 1 || ds[0].Kind != KindAlert || ds[0].Key != "" {
		t.Fatalf("decisions %+v, want one global alert", ds)
	}
	// The window drains, then a new surge is a new incident.
	for i := range 3 {
		ds = observe(e, failed("192.0.2.9", time.Hour+time.Duration(i)*time.Second), ds)
	}
	if len(ds) != 2 {
		t.Fatalf("got %d decisions after a second surge, want 2", len(ds))
	}
}

func TestAllowlistedAddressesAreNeverBlocked(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	var ds []Decision
	for i := range 10 {
		ds = observe(e, failed("10.1.2.3", time.Duration(i)), ds)
	}
	if len(ds) != 0 {
		t.Fatalf("allowlisted address got decisions %+v", ds)
	}
}

func TestResetGivesACleanSlate(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}})
	for i := range 5 {
		observe(e, failed("203.0.113.7", time.Duration(i)), nil)
	}
	e.Reset(netip.MustParseAddr("203.0.113.7"))
	var ds []Decision
	for i := range 4 {
		ds = observe(e, failed("203.0.113.7", time.Second+time.Duration(i)), ds)
	}
	if len(ds) != 0 {
		t.Fatalf("after reset, 4 failures gave %+v", ds)
	}
	if ds = observe(e, failed("203.0.113.7", 2*time.Second), ds); len(ds) != 1 || ds[0].Renewal {
		t.Fatalf("fifth failure after reset gave %+v, want one new block", ds)
	}
}

func TestPrefixGrouping(t *testing.T) {
	rule := sec010()
	rule.IPv6Prefix = 64
	e := mustEngine(t, Config{Rules: []Rule{rule}})
	var ds []Decision
	for i := range 5 {
		ds = observe(e, failed(fmt.Sprintf("2001:db8:1:2::%x", i+1), time.Duration(i)), ds)
	}
	if len(ds) != 1 || ds[0].Key != "2001:db8:1:2::/64" {
		t.Fatalf("decisions %+v, want one block of the /64", ds)
	}
}

func TestMemoryIsCappedAndHotKeysSurvive(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}, MaxKeys: 100})
	// An attacker close to the threshold...
	for i := range 4 {
		observe(e, failed("203.0.113.7", time.Duration(i)), nil)
	}
	// ...hides behind a spray of fresh addresses.
	for i := range 10000 {
		observe(e, failed(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String(), time.Second), nil)
	}
	st := e.Stats()
	if st.TrackedKeys > 100 || st.Evictions < 9900 {
		t.Fatalf("stats %+v: cap not enforced", st)
	}
	if ds := observe(e, failed("203.0.113.7", 2*time.Second), nil); len(ds) != 1 {
		t.Fatalf("the hot key was evicted: fifth failure gave %+v", ds)
	}
}

func TestValidateChecksWhatNewChecks(t *testing.T) {
	dup := Config{Rules: []Rule{sec010(), sec010()}}
	if err := Validate(dup); err == nil {
		t.Error("Validate accepted two rules of one name")
	}
	if _, err := New(dup); err == nil {
		t.Error("New accepted two rules of one name")
	}
	if err := Validate(Config{Rules: []Rule{sec010()}}); err != nil {
		t.Errorf("Validate refused the runbook rule: %v", err)
	}
}

func TestTheKeyCapHasALimit(t *testing.T) {
	if _, err := New(Config{Rules: []Rule{sec010()}, MaxKeys: MaxKeysLimit + 1}); err == nil {
		t.Error("accepted a cap beyond the index's reach")
	}
}

// TestEngineMatchesBruteForceOracle compares the engine with a recount from
// scratch over random in-order streams.
func TestEngineMatchesBruteForceOracle(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 7))
		rule := Rule{Name: "r", Match: ActionAuthFailed, PerIP: true,
			Window:    time.Duration(1+r.IntN(60)) * time.Second,
			Threshold: 1 + r.IntN(8), BlockTTL: time.Duration(r.IntN(30)) * time.Second}
		e := mustEngine(t, Config{Rules: []Rule{rule}})
		o := newOracle(rule)
		at := time.Duration(0)
		for i := range 3000 {
			at += time.Duration(r.IntN(3000)) * time.Millisecond
			ev := failed(fmt.Sprintf("192.0.2.%d", r.IntN(5)), at)
			got := observe(e, ev, nil)
			want := o.observe(ev)
			if fmt.Sprint(summary(got)) != fmt.Sprint(summary(want)) {
				t.Fatalf("seed %d rule %+v event %d (%v at %v): engine %v, oracle %v", seed, rule, i, ev.IP, at, summary(got), summary(want))
			}
		}
	}
}

func summary(ds []Decision) []string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%s/%s/%d/%v", d.Key, d.Kind, d.Count, d.Renewal))
	}
	return s
}

type oracle struct {
	rule    Rule
	events  map[netip.Addr][]time.Time
	blocked map[netip.Addr]time.Time
	active  map[netip.Addr]bool
}

func newOracle(r Rule) *oracle {
	return &oracle{rule: r, events: map[netip.Addr][]time.Time{}, blocked: map[netip.Addr]time.Time{}, active: map[netip.Addr]bool{}}
}

func (o *oracle) observe(ev Event) []Decision {
	ip := ev.IP
	if until, ok := o.blocked[ip]; ok && !ev.Time.Before(until) {
		delete(o.blocked, ip)
		delete(o.events, ip)
		o.active[ip] = false
	}
	evs := o.events[ip]
	if len(evs) > 0 && !evs[len(evs)-1].After(ev.Time.Add(-o.rule.Window)) {
		evs = nil
		o.active[ip] = false
	}
	evs = append(evs, ev.Time)
	o.events[ip] = evs
	inWindow := 0
	for _, t := range evs {
		if t.After(ev.Time.Add(-o.rule.Window)) {
			inWindow++
		}
	}
	if inWindow < o.rule.Threshold {
		o.active[ip] = false
		return nil
	}
	d := Decision{Key: ip.String(), Count: len(evs)}
	if o.rule.BlockTTL > 0 {
		d.Kind = KindBlock
		_, d.Renewal = o.blocked[ip]
		o.blocked[ip] = ev.Time.Add(o.rule.BlockTTL)
		return []Decision{d}
	}
	if o.active[ip] {
		return nil
	}
	o.active[ip] = true
	d.Kind = KindAlert
	return []Decision{d}
}

func TestTriggerReadsLikeTheRunbook(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}})
	var ds []Decision
	for i := range 5 {
		ds = observe(e, failed("203.0.113.7", time.Duration(i)), ds)
	}
	if got, want := ds[0].Trigger(), "5 or more auth_failed events from 203.0.113.7 within 24h"; got != want {
		t.Errorf("trigger %q, want %q", got, want)
	}
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s", 2 * time.Second: "2s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRepeatOffendersGetEscalatedBlocks(t *testing.T) {
	rule := sec010()
	rule.BlockTTL = time.Minute
	rule.Escalate = Escalation{Factor: 4, Max: 10 * time.Minute, Remember: 24 * time.Hour}
	e := mustEngine(t, Config{Rules: []Rule{rule}})
	at := time.Duration(0)
	offend := func() Decision {
		t.Helper()
		var ds []Decision
		for range 5 {
			at += time.Second
			ds = observe(e, failed("203.0.113.7", at), ds)
		}
		if len(ds) != 1 {
			t.Fatalf("decisions %+v", ds)
		}
		at += ds[0].TTL // wait the block out
		return ds[0]
	}
	for i, want := range []time.Duration{time.Minute, 4 * time.Minute, 10 * time.Minute, 10 * time.Minute} {
		if d := offend(); d.TTL != want || d.Offence != i+1 {
			t.Errorf("offence %d: ttl %v (offence %d), want %v", i+1, d.TTL, d.Offence, want)
		}
	}
	at += 25 * time.Hour // beyond the memory: a first offence again
	if d := offend(); d.TTL != time.Minute || d.Offence != 1 {
		t.Errorf("after the memory: ttl %v offence %d", d.TTL, d.Offence)
	}
}

func enumeration() Rule {
	return Rule{Name: "account-enumeration", Match: ActionAuthFailed, PerIP: true, Distinct: "username",
		Window: 10 * time.Minute, Threshold: 3, Alert: true, BlockTTL: time.Hour}
}

func tried(ip, user string, at time.Duration) Event {
	ev := failed(ip, at)
	ev.Username = user
	return ev
}

func TestEnumerationCountsDistinctUsernames(t *testing.T) {
	tests := []struct {
		name   string
		events []Event
		fires  int // index of the event that must fire, -1 for none
	}{
		{"one account guessed many times is not enumeration",
			[]Event{tried("203.0.113.7", "alice", 0), tried("203.0.113.7", "alice", 1), tried("203.0.113.7", "alice", 2), tried("203.0.113.7", "alice", 3)}, -1},
		{"the third distinct account fires",
			[]Event{tried("203.0.113.7", "alice", 0), tried("203.0.113.7", "alice", 1), tried("203.0.113.7", "bob", 2), tried("203.0.113.7", "carol", 3)}, 3},
		{"accounts tried outside the window do not add up",
			[]Event{tried("203.0.113.7", "alice", 0), tried("203.0.113.7", "bob", time.Minute), tried("203.0.113.7", "carol", 11*time.Minute)}, -1},
		{"a repeat refreshes an account: it counts from its last try",
			[]Event{tried("203.0.113.7", "alice", 0), tried("203.0.113.7", "bob", time.Minute), tried("203.0.113.7", "alice", 9*time.Minute), tried("203.0.113.7", "carol", 10*time.Minute+time.Second)}, 3},
		{"events without a username are not counted",
			[]Event{tried("203.0.113.7", "alice", 0), tried("203.0.113.7", "", 1), tried("203.0.113.7", "", 2), tried("203.0.113.7", "bob", 3)}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEngine(t, Config{Rules: []Rule{enumeration()}})
			fired := -1
			for i, ev := range tt.events {
				if ds := observe(e, ev, nil); len(ds) > 0 && fired < 0 {
					fired = i
					if ds[0].Distinct != 3 || !strings.Contains(ds[0].Trigger(), "3 or more distinct usernames") {
						t.Errorf("decision %+v trigger %q", ds[0], ds[0].Trigger())
					}
				}
			}
			if fired != tt.fires {
				t.Errorf("fired at event %d, want %d", fired, tt.fires)
			}
		})
	}
}

// TestDistinctMatchesBruteForceOracle recounts distinct usernames from
// scratch on random streams.
func TestDistinctMatchesBruteForceOracle(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 11))
		rule := Rule{Name: "enum", Match: ActionAuthFailed, PerIP: true, Distinct: "username",
			Window: time.Duration(1+r.IntN(60)) * time.Second, Threshold: 1 + r.IntN(6), BlockTTL: time.Duration(r.IntN(20)) * time.Second}
		e := mustEngine(t, Config{Rules: []Rule{rule}})
		type seen struct {
			user string
			at   time.Duration
		}
		history := map[string][]seen{}
		blocked := map[string]time.Duration{}
		alertOpen := map[string]bool{}
		at := time.Duration(0)
		for i := range 3000 {
			at += time.Duration(r.IntN(2000)) * time.Millisecond
			ip := fmt.Sprintf("192.0.2.%d", r.IntN(4))
			user := fmt.Sprintf("u%d", r.IntN(8))
			got := len(observe(e, tried(ip, user, at), nil)) > 0

			// Oracle: distinct users with a try in (at-window, at] since the
			// clean slate (block expiry).
			if until, ok := blocked[ip]; ok && at >= until {
				delete(blocked, ip)
				history[ip] = nil
			}
			history[ip] = append(history[ip], seen{user, at})
			users := map[string]bool{}
			for _, s := range history[ip] {
				if s.at > at-rule.Window {
					users[s.user] = true
				}
			}
			want := len(users) >= rule.Threshold
			if want && rule.BlockTTL > 0 {
				blocked[ip] = at + rule.BlockTTL
			}
			if rule.BlockTTL == 0 {
				want = want && !alertOpen[ip]
				alertOpen[ip] = len(users) >= rule.Threshold
			}
			if got != want {
				t.Fatalf("seed %d rule %+v event %d (%s %s at %v): engine fired %v, oracle %v", seed, rule, i, ip, user, at, got, want)
			}
		}
	}
}

func TestAGrowingIncidentEscalatesInsteadOfOpeningAnother(t *testing.T) {
	rule := Rule{Name: "failed-login-surge", Match: ActionAuthFailed, Window: 5 * time.Minute, Threshold: 3, Alert: true}
	e := mustEngine(t, Config{Rules: []Rule{rule}})
	var got []string
	for i := range 150 {
		for _, d := range observe(e, failed(fmt.Sprintf("192.0.2.%d", i%200), time.Duration(i)*300*time.Millisecond), nil) {
			got = append(got, fmt.Sprintf("%s/%v", d.Severity, d.Escalation))
		}
	}
	if want := "[P3/false P2/true P1/true]"; fmt.Sprint(got) != want {
		t.Errorf("decisions %v, want %s", got, want)
	}
}

func TestReloadKeepsWindowsOfUnchangedRules(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010(), enumeration()}})
	for i := range 4 {
		observe(e, tried("203.0.113.7", fmt.Sprintf("u%d", i%2), time.Duration(i)), nil)
	}
	longer := sec010()
	longer.BlockTTL = time.Hour // changed action, same counting
	tighter := enumeration()
	tighter.Threshold = 2 // changed counting: starts afresh
	e, err := e.Reload(Config{Rules: []Rule{longer, tighter}})
	if err != nil {
		t.Fatal(err)
	}
	ds := observe(e, tried("203.0.113.7", "u0", 4), nil)
	var got []string
	for _, d := range ds {
		got = append(got, fmt.Sprintf("%s/%d/%v", d.Rule, d.Count, d.TTL))
	}
	// SEC-010 kept its four failures (the fifth fires, with the new TTL);
	// the enumeration rule counts from scratch (one username so far).
	if fmt.Sprint(got) != "[failed-login-burst/5/1h0m0s]" {
		t.Errorf("after reload: %v", got)
	}
}

// TestEngineMatchesOracleOutOfOrder: random streams over IPv4 and IPv6
// clients with bursts, events arriving late within the tolerance (counted
// where they belong) and beyond it (dropped and counted as late), against a
// recount from scratch.
func TestEngineMatchesOracleOutOfOrder(t *testing.T) {
	ips := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("198.51.100.7")}
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 23))
		tolerance := time.Duration(1+r.IntN(10)) * time.Second
		rule := Rule{Name: "r", Match: ActionAuthFailed, PerIP: true,
			Window: time.Duration(1+r.IntN(30)) * time.Second, Threshold: 1 + r.IntN(6), BlockTTL: time.Duration(r.IntN(20)) * time.Second}
		// One severity level: escalations are tested elsewhere.
		e := mustEngine(t, Config{Rules: []Rule{rule}, Tolerance: tolerance, Severity: []SeverityLevel{{"P3", 0}}})
		events := map[netip.Addr][]time.Duration{}
		blocked := map[netip.Addr]time.Duration{}
		active := map[netip.Addr]bool{}
		var watermark time.Duration
		seen := false
		late := 0
		at := time.Duration(0)
		for i := range 3000 {
			if r.IntN(10) == 0 {
				at += time.Duration(r.IntN(5000)) * time.Millisecond // a pause
			} else {
				at += time.Duration(r.IntN(200)) * time.Millisecond // a burst
			}
			ts := at
			if r.IntN(5) == 0 {
				ts -= time.Duration(r.Int64N(int64(2 * tolerance))) // late, sometimes too late
			}
			ip := ips[r.IntN(len(ips))]
			got := observe(e, Event{Time: t0.Add(ts), Action: ActionAuthFailed, IP: ip}, nil)

			// Oracle.
			var want []string
			if seen && ts < watermark-tolerance {
				late++
			} else {
				watermark = max(watermark, ts)
				if !seen {
					watermark, seen = ts, true
				}
				evs := events[ip]
				if until, ok := blocked[ip]; ok && ts >= until {
					delete(blocked, ip)
					evs = nil
				}
				if len(evs) > 0 && slices.Max(evs) <= ts-rule.Window {
					evs = nil
					active[ip] = false
				}
				evs = append(evs, ts)
				events[ip] = evs
				now := slices.Max(evs)
				n := 0
				for _, x := range evs {
					if x > now-rule.Window {
						n++
					}
				}
				switch {
				case n < rule.Threshold:
					active[ip] = false
				case rule.BlockTTL > 0:
					_, renewal := blocked[ip]
					blocked[ip] = now + rule.BlockTTL
					want = append(want, fmt.Sprintf("block/%d/%v", len(evs), renewal))
				case !active[ip]:
					active[ip] = true
					want = append(want, fmt.Sprintf("alert/%d/false", len(evs)))
				}
			}
			var gotS []string
			for _, d := range got {
				gotS = append(gotS, fmt.Sprintf("%s/%d/%v", d.Kind, d.Count, d.Renewal))
			}
			if fmt.Sprint(gotS) != fmt.Sprint(want) {
				t.Fatalf("seed %d rule %+v tolerance %v event %d (%v at %v): engine %v, oracle %v", seed, rule, tolerance, i, ip, ts, gotS, want)
			}
		}
		if e.Stats().Late != uint64(late) {
			t.Fatalf("seed %d: late %d, oracle %d", seed, e.Stats().Late, late)
		}
	}
}

func TestCredentialStuffingNeedsManyAccountsAndSuccesses(t *testing.T) {
	rule := Rule{Name: "credential-stuffing", PerIP: true, Distinct: "username", MinSuccessRatio: 0.5,
		Window: 10 * time.Minute, Threshold: 4, Alert: true, BlockTTL: time.Hour}
	login := func(ip, user string, ok bool, at time.Duration) Event {
		ev := tried(ip, user, at)
		if ok {
			ev.Action = ActionAuthSucceeded
		}
		return ev
	}
	for _, tt := range []struct {
		name   string
		events []Event
		fires  bool
	}{
		{"four accounts, all failing: enumeration, not stuffing",
			[]Event{login("203.0.113.7", "a", false, 0), login("203.0.113.7", "b", false, 1), login("203.0.113.7", "c", false, 2), login("203.0.113.7", "d", false, 3)}, false},
		{"four accounts, two logged into: stuffing",
			[]Event{login("203.0.113.7", "a", true, 0), login("203.0.113.7", "b", false, 1), login("203.0.113.7", "c", true, 2), login("203.0.113.7", "d", false, 3)}, true},
		{"a shared office IP where three people log in: too few accounts",
			[]Event{login("203.0.113.7", "a", true, 0), login("203.0.113.7", "b", true, 1), login("203.0.113.7", "c", true, 2)}, false},
		{"an account's latest attempt counts: a later failure replaces a success",
			[]Event{login("203.0.113.7", "a", true, 0), login("203.0.113.7", "b", true, 1), login("203.0.113.7", "a", false, 2), login("203.0.113.7", "c", false, 3), login("203.0.113.7", "d", false, 4)}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEngine(t, Config{Rules: []Rule{rule}})
			fired := false
			for _, ev := range tt.events {
				fired = fired || len(observe(e, ev, nil)) > 0
			}
			if fired != tt.fires {
				t.Errorf("fired %v, want %v", fired, tt.fires)
			}
		})
	}
}

// observe runs ev with the clock at its own time, as replay does.
func observe(e *Engine, ev Event, out []Decision) []Decision { return e.Observe(ev, ev.Time, out) }

// A line stamped far ahead of the clock (a writer chooses its stamp, a
// pod's clock may be skewed) counts at the clock's time and never makes the
// events after it late.
func TestALineFromTheFutureCannotMakeOtherEventsLate(t *testing.T) {
	for _, ahead := range []time.Duration{10*time.Minute + time.Second, time.Hour, 365 * 24 * time.Hour} {
		t.Run(ahead.String()+" ahead", func(t *testing.T) {
			e := mustEngine(t, Config{Rules: []Rule{sec010()}})
			clock := t0
			future := failed("192.0.2.66", 0)
			future.Time = clock.Add(ahead)
			ds := e.Observe(future, clock, nil)
			if e.Stats().Future != 1 || len(ds) != 0 {
				t.Fatalf("future %d, decisions %v", e.Stats().Future, ds)
			}
			var blocked []Decision
			for i := range 5 {
				clock = t0.Add(time.Duration(i+1) * time.Second)
				blocked = e.Observe(failed("203.0.113.7", time.Duration(i+1)*time.Second), clock, blocked)
			}
			if len(blocked) != 1 || blocked[0].Kind != KindBlock || e.Stats().Late != 0 {
				t.Fatalf("after a line %v ahead: decisions %v, late %d", ahead, blocked, e.Stats().Late)
			}
			// The clamped line counted at the clock's time: four more from
			// its address block it.
			for i := range 4 {
				if ds = e.Observe(failed("192.0.2.66", 10*time.Second+time.Duration(i)), t0.Add(10*time.Second+time.Duration(i)), ds[:0]); len(ds) > 0 {
					if i != 3 || ds[0].Count != 5 {
						t.Fatalf("decision at the %d-th: %v", i+2, ds)
					}
				}
			}
			if len(ds) != 1 {
				t.Errorf("the clamped line did not count: %v", ds)
			}
		})
	}
}

// Within the bound an event ahead counts at its own time, but the watermark
// stops at the clock.
func TestAnEventSlightlyAheadCountsAtItsTimeAndHoldsTheWatermarkAtTheClock(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}, Tolerance: time.Minute})
	ahead := failed("192.0.2.1", 9*time.Minute)
	if ds := e.Observe(ahead, t0, nil); len(ds) != 0 || e.Stats().Future != 0 {
		t.Fatalf("decisions %v, future %d", ds, e.Stats().Future)
	}
	// An event at the clock's time is not late, though it is 9 minutes
	// behind the newest stamp.
	e.Observe(failed("192.0.2.2", 0), t0, nil)
	if e.Stats().Late != 0 {
		t.Errorf("an event at the clock's time was dropped as late behind a stamp 9 minutes ahead")
	}
}

// A rule grouped by prefix blocks the network: five addresses of one /64
// (or /24) make one decision whose target is the whole network.
func TestAPrefixRuleBlocksTheNetwork(t *testing.T) {
	for _, c := range []struct {
		rule    Rule
		ips     []string
		network string
	}{
		{Rule{IPv6Prefix: 64}, []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3", "2001:db8:1:2:1:2:3:4", "2001:db8:1:2::5"}, "2001:db8:1:2::/64"},
		{Rule{IPv4Prefix: 24}, []string{"203.0.113.1", "203.0.113.77", "203.0.113.254", "203.0.113.9", "203.0.113.10"}, "203.0.113.0/24"},
	} {
		r := sec010()
		r.IPv4Prefix, r.IPv6Prefix = c.rule.IPv4Prefix, c.rule.IPv6Prefix
		e := mustEngine(t, Config{Rules: []Rule{r}})
		var ds []Decision
		for i, ip := range c.ips {
			ds = observe(e, failed(ip, time.Duration(i)*time.Second), ds)
		}
		if len(ds) != 1 || ds[0].Net != netip.MustParsePrefix(c.network) || ds[0].Key != c.network {
			t.Fatalf("decisions %+v, want one blocking %s", ds, c.network)
		}
	}
}

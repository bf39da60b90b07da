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

func targetedAccount() Rule {
	return Rule{Name: "targeted-account", Match: ActionAuthFailed, GroupBy: "username", Distinct: "client_ip",
		Window: 10 * time.Minute, Threshold: 20, Alert: true}
}

func triedFrom(ip, user string, at time.Duration) Event {
	return Event{Time: t0.Add(at), Action: ActionAuthFailed, IP: netip.MustParseAddr(ip), Username: user}
}

// Twenty addresses trying one account once each is one incident that
// names the account and every address, whatever case each spelled the
// account in; nineteen are none.
func TestATargetedAccountIsOneIncidentNamingItsSources(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{targetedAccount(), sec010()}})
	var ds []Decision
	for i := range 19 {
		user := "alice"
		if i%3 == 0 {
			user = "Alice"
		}
		ds = observe(e, triedFrom(fmt.Sprintf("198.51.100.%d", i+1), user, time.Duration(i)*time.Second), ds)
	}
	if len(ds) != 0 {
		t.Fatalf("19 addresses fired: %v", summary(ds))
	}
	ds = observe(e, triedFrom("2001:db8::20", "alice", 20*time.Second), ds)
	ds = observe(e, triedFrom("2001:db8::21", "ALICE", 21*time.Second), ds) // the incident is open
	if len(ds) != 1 {
		t.Fatalf("decisions %v, want one incident", summary(ds))
	}
	d := ds[0]
	if d.Kind != KindAlert || d.GroupBy != "username" || d.Key != "alice" || d.Distinct != 20 || len(d.Sources) != 20 {
		t.Fatalf("decision %+v: want an alert for username alice with 20 distinct sources", d)
	}
	if d.Sources[0] != netip.MustParseAddr("198.51.100.1") || d.Sources[19] != netip.MustParseAddr("2001:db8::20") {
		t.Errorf("sources %v: want the addresses in the order they were seen", d.Sources)
	}
	if got, want := d.Trigger(), "20 or more distinct client addresses for username alice within 10m"; got != want {
		t.Errorf("trigger %q, want %q", got, want)
	}
}

// A rule that blocks its sources blocks every address in the window when
// it fires, then each new address that keeps it firing, and never the
// account itself; an allowlisted address is never one of them.
func TestBlockingTheSourcesBlocksEachContributingAddress(t *testing.T) {
	r := targetedAccount()
	r.Threshold, r.BlockTTL, r.BlockSources = 3, time.Hour, true
	e := mustEngine(t, Config{Rules: []Rule{r}, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	var got []string
	for i, ip := range []string{"203.0.113.1", "10.1.1.1", "203.0.113.2", "203.0.113.1", "203.0.113.3", "203.0.113.4"} {
		for _, d := range observe(e, triedFrom(ip, "bob", time.Duration(i)*time.Second), nil) {
			got = append(got, fmt.Sprintf("%s %s %s renewal=%v %s", d.Kind, d.Key, d.Net, d.Renewal, d.SourceOf))
		}
	}
	want := []string{
		"alert bob invalid Prefix renewal=false ",
		"block 203.0.113.2 203.0.113.2/32 renewal=false username bob",
		"block 203.0.113.1 203.0.113.1/32 renewal=false username bob",
		"block 203.0.113.3 203.0.113.3/32 renewal=false username bob",
		"alert bob invalid Prefix renewal=true ",
		"block 203.0.113.4 203.0.113.4/32 renewal=false username bob",
	}
	if !slices.Equal(got, want) {
		t.Errorf("decisions\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// One session used from three addresses is an alert naming the session;
// the same address again and again is not.
func TestASessionFromManyAddressesIsNamed(t *testing.T) {
	r := Rule{Name: "session-shared", GroupBy: "session_id", Distinct: "client_ip", Window: time.Hour, Threshold: 3, Alert: true}
	e := mustEngine(t, Config{Rules: []Rule{r}})
	ev := func(ip, session string, at time.Duration) Event {
		return Event{Time: t0.Add(at), Action: ActionAuthSucceeded, IP: netip.MustParseAddr(ip), Attrs: []Attr{{"session_id", session}}}
	}
	var ds []Decision
	for i := range 5 {
		ds = observe(e, ev("203.0.113.1", "s-1", time.Duration(i)), ds)
	}
	ds = observe(e, ev("203.0.113.2", "s-1", 5), ds)
	ds = observe(e, ev("203.0.113.3", "s-2", 6), ds) // another session
	ds = observe(e, Event{Time: t0.Add(7), Action: ActionAuthSucceeded, IP: netip.MustParseAddr("203.0.113.4")}, ds)
	if len(ds) != 0 {
		t.Fatalf("fired early: %v", summary(ds))
	}
	ds = observe(e, ev("2001:db8::9", "s-1", 8), ds)
	if len(ds) != 1 || ds[0].Key != "s-1" || ds[0].GroupBy != "session_id" || len(ds[0].Sources) != 3 {
		t.Fatalf("decisions %+v: want one alert naming session s-1 and its 3 addresses", ds)
	}
}

// TestGroupedRulesMatchBruteForceOracle recounts rules grouped by
// username from scratch on random streams: counting events or distinct
// addresses, alerting or blocking their sources.
func TestGroupedRulesMatchBruteForceOracle(t *testing.T) {
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 19))
		rule := Rule{Name: "g", Match: ActionAuthFailed, GroupBy: "username",
			Window: time.Duration(1+r.IntN(60)) * time.Second, Threshold: 1 + r.IntN(6), Alert: true}
		if r.IntN(2) == 0 {
			rule.Distinct = "client_ip"
		}
		if r.IntN(2) == 0 {
			rule.BlockTTL, rule.BlockSources = time.Duration(1+r.IntN(20))*time.Second, true
		}
		e := mustEngine(t, Config{Rules: []Rule{rule}})
		o := &groupOracle{rule: rule, events: map[string][]groupSeen{}, blocked: map[string]time.Duration{}, active: map[string]bool{}}
		at := time.Duration(0)
		for i := range 3000 {
			at += time.Duration(r.IntN(2000)) * time.Millisecond
			user := []string{"alice", "Alice", "bob", "carol"}[r.IntN(4)]
			ev := triedFrom(fmt.Sprintf("192.0.2.%d", r.IntN(6)), user, at)
			got, want := groupSummary(observe(e, ev, nil)), o.observe(ev, at)
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d rule %+v event %d (%s %s at %v):\nengine %q\noracle %q", seed, rule, i, ev.IP, user, at, got, want)
			}
		}
	}
}

func groupSummary(ds []Decision) []string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%s %s renewal=%v sources=%v", d.Kind, d.Key, d.Renewal, d.Sources))
	}
	return s
}

type groupSeen struct {
	at  time.Duration
	src netip.Addr
}

type groupOracle struct {
	rule    Rule
	events  map[string][]groupSeen // by folded username, since the clean slate
	blocked map[string]time.Duration
	active  map[string]bool
}

func (o *groupOracle) observe(ev Event, at time.Duration) []string {
	key := strings.ToLower(ev.Username)
	if until, ok := o.blocked[key]; ok && at >= until {
		delete(o.blocked, key)
		o.events[key], o.active[key] = nil, false
	}
	if evs := o.events[key]; len(evs) > 0 && evs[len(evs)-1].at <= at-o.rule.Window {
		o.events[key], o.active[key] = nil, false
	}
	o.events[key] = append(o.events[key], groupSeen{at, ev.IP})
	// The window's entries, newest first: every event, or each address's
	// latest event.
	var kept []groupSeen
	evs := o.events[key]
	for i := len(evs) - 1; i >= 0 && evs[i].at > at-o.rule.Window; i-- {
		if o.rule.Distinct == "" || !slices.ContainsFunc(kept, func(s groupSeen) bool { return s.src == evs[i].src }) {
			kept = append(kept, evs[i])
		}
	}
	if len(kept) < o.rule.Threshold {
		o.active[key] = false
		return nil
	}
	kept = kept[:o.rule.Threshold]
	var sources []netip.Addr
	for i := len(kept) - 1; i >= 0; i-- {
		// Each address once, at its latest entry.
		if j := slices.Index(sources, kept[i].src); j >= 0 {
			sources = slices.Delete(sources, j, j+1)
		}
		sources = append(sources, kept[i].src)
	}
	line := func(kind Kind, k string, renewal bool, srcs []netip.Addr) string {
		return fmt.Sprintf("%s %s renewal=%v sources=%v", kind, k, renewal, srcs)
	}
	if o.rule.BlockTTL == 0 {
		if o.active[key] {
			return nil
		}
		o.active[key] = true
		return []string{line(KindAlert, key, false, sources)}
	}
	_, renewal := o.blocked[key]
	o.blocked[key] = at + o.rule.BlockTTL
	out := []string{line(KindAlert, key, renewal, sources)}
	blocks := sources
	if renewal {
		blocks = []netip.Addr{ev.IP}
	}
	for _, a := range blocks {
		out = append(out, line(KindBlock, a.String(), false, nil))
	}
	return out
}

// A rule that protects its account asks for the protection when it fires
// and again for each event that keeps it firing, so that the account stays
// protected while the spray goes on; it blocks no address.
func TestAProtectingRuleProtectsItsAccountWhileItFires(t *testing.T) {
	r := targetedAccount()
	r.Threshold, r.Protect = 3, 15*time.Minute
	e := mustEngine(t, Config{Rules: []Rule{r}})
	var got []string
	for i, ip := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"} {
		for _, d := range observe(e, triedFrom(ip, "Alice", time.Duration(i)*time.Minute), nil) {
			got = append(got, fmt.Sprintf("%s %s %s renewal=%v", d.Kind, d.Key, FormatDuration(d.TTL), d.Renewal))
		}
	}
	want := []string{"alert alice 0s renewal=false", "protect alice 15m renewal=false", "alert alice 0s renewal=true", "protect alice 15m renewal=true"}
	if !slices.Equal(got, want) {
		t.Errorf("decisions %q, want %q", got, want)
	}
	if _, err := New(Config{Rules: []Rule{{Name: "p", PerIP: true, Window: time.Hour, Threshold: 1, Alert: true, Protect: time.Minute}}}); err == nil {
		t.Error("a rule grouped by address was let protect an account")
	}
}

package detector

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// restart saves e's state at now and loads it into a fresh engine of the
// same rules: a daemon stopped and started again.
func restart(t *testing.T, e *Engine, cfg Config, now, replayFrom time.Time) (*Engine, Loaded) {
	t.Helper()
	data, _ := e.Checkpoint(nil, now)
	next := mustEngine(t, cfg)
	got, err := next.Load(data, now, replayFrom)
	if err != nil {
		t.Fatal(err)
	}
	return next, got
}

// The runbook across a restart: four failures, a restart, one failure and
// the address is blocked, with the tally of all five.
func TestFourFailuresARestartAndOneMoreBlock(t *testing.T) {
	cfg := Config{Rules: []Rule{sec010()}}
	e := mustEngine(t, cfg)
	for i := range 4 {
		if ds := observe(e, failed("203.0.113.7", time.Duration(i)*time.Second), nil); len(ds) != 0 {
			t.Fatalf("failure %d decided %+v", i+1, ds)
		}
	}
	e, loaded := restart(t, e, cfg, t0.Add(10*time.Second), time.Time{})
	if loaded.Keys != 1 || !loaded.Saved.Equal(t0.Add(10*time.Second)) {
		t.Errorf("loaded %+v", loaded)
	}
	ds := observe(e, failed("203.0.113.7", time.Minute), nil)
	if len(ds) != 1 || ds[0].Kind != KindBlock || ds[0].Count != 5 || !ds[0].FirstSeen.Equal(t0) || ds[0].Renewal {
		t.Fatalf("the fifth failure after a restart decided %+v, want a block with a tally of 5", ds)
	}
}

// A blocked address stays known as blocked: after a restart the next
// failure renews the block, which is what re-blocks an address whose
// ip_block key alone was deleted (the runbook's "not an unblock").
func TestABlockSurvivesARestartAndTheNextFailureRenewsIt(t *testing.T) {
	cfg := Config{Rules: []Rule{sec010()}}
	e := mustEngine(t, cfg)
	var ds []Decision
	for i := range 5 {
		ds = observe(e, failed("203.0.113.7", time.Duration(i)*time.Second), ds)
	}
	if len(ds) != 1 {
		t.Fatalf("decisions %+v", ds)
	}
	e, _ = restart(t, e, cfg, t0.Add(time.Minute), time.Time{})
	if bs := e.ActiveBlocks(t0.Add(time.Minute)); len(bs) != 1 || bs[0].Key != "203.0.113.7" {
		t.Fatalf("standing blocks after a restart %+v", bs)
	}
	ds = observe(e, failed("203.0.113.7", 2*time.Minute), nil)
	if len(ds) != 1 || !ds[0].Renewal || ds[0].Count != 6 || ds[0].Offence != 1 {
		t.Fatalf("a failure after the restart decided %+v, want a renewal of the first offence", ds)
	}
}

// The distinct values seen before a restart are recognised after it: the
// same username again is not a new one.
func TestDistinctValuesAreRecognisedAcrossARestart(t *testing.T) {
	cfg := Config{Rules: []Rule{enumeration()}}
	e := mustEngine(t, cfg)
	observe(e, tried("198.51.100.1", "alice", 0), nil)
	observe(e, tried("198.51.100.1", "bob", time.Second), nil)
	e, _ = restart(t, e, cfg, t0.Add(2*time.Second), time.Time{})
	if ds := observe(e, tried("198.51.100.1", "alice", 3*time.Second), nil); len(ds) != 0 {
		t.Fatalf("alice again after a restart decided %+v: counted as a third username", ds)
	}
	if ds := observe(e, tried("198.51.100.1", "carol", 4*time.Second), nil); len(ds) != 1 || ds[0].Distinct != 3 {
		t.Fatalf("a third username after a restart decided %+v, want a block on 3 distinct", ds)
	}
}

// Offences are remembered across a restart: the second offence after it
// gets the escalated TTL.
func TestEscalationRemembersOffencesAcrossARestart(t *testing.T) {
	rule := sec010()
	rule.BlockTTL = time.Minute
	rule.Window = time.Hour
	rule.Escalate = Escalation{Factor: 4, Max: time.Hour, Remember: 24 * time.Hour}
	cfg := Config{Rules: []Rule{rule}}
	e := mustEngine(t, cfg)
	for i := range 5 {
		observe(e, failed("203.0.113.7", time.Duration(i)*time.Second), nil)
	}
	// The block has ended and the window emptied by the time of the save:
	// only the offence is left to remember.
	e, loaded := restart(t, e, cfg, t0.Add(2*time.Hour), time.Time{})
	if loaded.Keys != 1 {
		t.Fatalf("loaded %+v, want the offender's key", loaded)
	}
	var ds []Decision
	for i := range 5 {
		ds = observe(e, failed("203.0.113.7", 3*time.Hour+time.Duration(i)*time.Second), ds)
	}
	if len(ds) != 1 || ds[0].Offence != 2 || ds[0].TTL != 4*time.Minute {
		t.Fatalf("the second offence after a restart decided %+v, want offence 2 for 4m", ds)
	}
}

// Keys that hold nothing any more are not written: the checkpoint is the
// size of what matters, not of what was ever seen.
func TestACheckpointLeavesOutWhatNoLongerMatters(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}})
	observe(e, failed("192.0.2.1", 0), nil)
	observe(e, failed("192.0.2.2", 25*time.Hour), nil)
	save := t0.Add(25*time.Hour + time.Second)
	one, keys := e.Checkpoint(nil, save)
	if keys != 1 {
		t.Errorf("%d keys written, want 1 (192.0.2.1's only failure left the window)", keys)
	}
	// An IPv4 key with four failures takes a few dozen bytes.
	for i := range 100 {
		for j := range 4 {
			observe(e, failed(fmt.Sprintf("198.51.100.%d", i), 25*time.Hour+time.Duration(i*4+j)*time.Second), nil)
		}
	}
	more, keys := e.Checkpoint(nil, save.Add(time.Hour))
	if keys != 101 {
		t.Fatalf("%d keys written, want 101", keys)
	}
	if per := (len(more) - len(one)) / 100; per > 40 {
		t.Errorf("an IPv4 key with four failures takes %d bytes in a checkpoint", per)
	}
}

// A daemon that re-reads its log source from replayFrom counts those
// events again: the checkpoint then gives only what the re-read cannot,
// and every event counts once.
func TestARereadFromReplayFromCountsEachEventOnce(t *testing.T) {
	rule := sec010()
	rule.BlockTTL = time.Hour
	rule.Escalate = Escalation{Factor: 2, Max: 8 * time.Hour, Remember: 48 * time.Hour}
	cfg := Config{Rules: []Rule{rule}}
	var evs []Event
	for i := range 5 { // the first offence, long ago
		evs = append(evs, failed("203.0.113.7", time.Duration(i)*time.Second))
	}
	for i := range 3 { // then three failures before the stop, two after
		evs = append(evs, failed("203.0.113.7", 20*time.Hour+time.Duration(i)*time.Minute))
	}
	after := []Event{failed("203.0.113.7", 20*time.Hour+3*time.Minute), failed("203.0.113.7", 20*time.Hour+4*time.Minute)}

	never := mustEngine(t, cfg)
	var want []Decision
	for _, ev := range append(slices.Clone(evs), after...) {
		want = observe(never, ev, want)
	}

	e := mustEngine(t, cfg)
	for _, ev := range evs {
		observe(e, ev, nil)
	}
	// The re-read starts 30 minutes before the restart: the three
	// failures before the stop come again.
	stop := t0.Add(20*time.Hour + 5*time.Minute)
	from := stop.Add(-30 * time.Minute)
	e, _ = restart(t, e, cfg, stop, from)
	var got []Decision
	for _, ev := range append(evs[5:], after...) {
		got = observe(e, ev, got)
	}
	if fmt.Sprint(summary(got)) != fmt.Sprint(summary(want[1:])) || got[len(got)-1].Offence != 2 {
		t.Fatalf("after a re-read: %v (offence %d), never stopped: %v", summary(got), got[len(got)-1].Offence, summary(want[1:]))
	}
}

// A restart anywhere in a random run changes no decision: the decisions
// of a run stopped and started again at a random event are those of one
// that never stopped, for per-IP, prefix, distinct and global rules with
// escalation and late events.
func TestARestartAnywhereChangesNoDecision(t *testing.T) {
	ips := []string{"192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2:1", "198.51.100.7"}
	users := []string{"alice", "bob", "carol", "dave"}
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 99))
		cfg := Config{Tolerance: 5 * time.Second, Rules: []Rule{
			{Name: "burst", Match: ActionAuthFailed, PerIP: true, Window: time.Duration(5+r.IntN(60)) * time.Second,
				Threshold: 2 + r.IntN(5), BlockTTL: time.Duration(1+r.IntN(30)) * time.Second, Alert: true,
				Escalate: Escalation{Factor: 2, Max: time.Minute, Remember: 5 * time.Minute}},
			{Name: "net", Match: ActionAuthFailed, PerIP: true, IPv6Prefix: 64, Window: 20 * time.Second, Threshold: 4, Alert: true},
			{Name: "enum", Match: ActionAuthFailed, PerIP: true, Distinct: "username", Window: 30 * time.Second,
				Threshold: 3, BlockTTL: 10 * time.Second},
			{Name: "global", Match: ActionAuthFailed, Window: 10 * time.Second, Threshold: 8, Alert: true},
		}}
		var evs []Event
		at := time.Duration(0)
		for range 600 {
			at += time.Duration(r.IntN(2000)) * time.Millisecond
			ts := at
			if r.IntN(6) == 0 {
				ts -= time.Duration(r.IntN(8000)) * time.Millisecond
			}
			ev := tried(ips[r.IntN(len(ips))], users[r.IntN(len(users))], ts)
			evs = append(evs, ev)
		}
		clock := func(i int) time.Time { return t0.Add(time.Duration(i) * 2 * time.Second) }
		never := mustEngine(t, cfg)
		var want []Decision
		for i, ev := range evs {
			want = never.Observe(ev, clock(i), want)
		}
		stopAt := r.IntN(len(evs))
		e := mustEngine(t, cfg)
		var got []Decision
		for i, ev := range evs[:stopAt] {
			got = e.Observe(ev, clock(i), got)
		}
		e, _ = restart(t, e, cfg, clock(stopAt), time.Time{})
		for i, ev := range evs[stopAt:] {
			got = e.Observe(ev, clock(stopAt+i), got)
		}
		if a, b := detail(got), detail(want); !slices.Equal(a, b) {
			i := 0
			for i < min(len(a), len(b)) && a[i] == b[i] {
				i++
			}
			t.Fatalf("seed %d, restart before event %d: decision %d of %d/%d differs:\n with a restart %v\n never stopped  %v",
				seed, stopAt, i, len(a), len(b), a[i:min(i+3, len(a))], b[i:min(i+3, len(b))])
		}
		if e.Stats().Late != never.Stats().Late-lateBefore(t, cfg, evs[:stopAt], clock) {
			t.Fatalf("seed %d: late events %d after the restart, %d in all without", seed, e.Stats().Late, never.Stats().Late)
		}
	}
}

func detail(ds []Decision) []string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%s/%s/%s/%d/%d/%v/%d/%v", d.Rule, d.Key, d.Kind, d.Count, d.Distinct, d.Renewal, d.Offence, d.TTL))
	}
	return s
}

// lateBefore is how many of evs an engine finds too late.
func lateBefore(t *testing.T, cfg Config, evs []Event, clock func(int) time.Time) uint64 {
	e := mustEngine(t, cfg)
	for i, ev := range evs {
		e.Observe(ev, clock(i), nil)
	}
	return e.Stats().Late
}

// A rule that counts another way after the restart starts empty and is
// named; the others are loaded.
func TestARuleThatCountsAnotherWayIsNotLoaded(t *testing.T) {
	cfg := Config{Rules: []Rule{sec010(), enumeration()}}
	e := mustEngine(t, cfg)
	observe(e, tried("203.0.113.7", "alice", 0), nil)
	data, _ := e.Checkpoint(nil, t0.Add(time.Second))
	changed := sec010()
	changed.Threshold = 3
	next := mustEngine(t, Config{Rules: []Rule{changed, enumeration()}})
	got, err := next.Load(data, t0.Add(time.Second), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Keys != 1 || fmt.Sprint(got.Skipped) != "[failed-login-burst]" {
		t.Fatalf("loaded %+v, want the enumeration key and failed-login-burst skipped", got)
	}
	if st := next.Stats(); st.TrackedKeys != 1 {
		t.Errorf("tracked keys %d", st.TrackedKeys)
	}
}

// A torn or altered checkpoint is refused whole and the engine is left as
// it was: every truncation and every flipped byte, never a panic.
func TestATornOrAlteredCheckpointIsRefusedWhole(t *testing.T) {
	cfg := Config{Rules: []Rule{sec010(), enumeration()}}
	e := mustEngine(t, cfg)
	for i, ip := range []string{"203.0.113.7", "2001:db8::7", "198.51.100.1"} {
		for j := range 5 {
			observe(e, tried(ip, fmt.Sprint("u", j), time.Duration(i*10+j)*time.Second), nil)
		}
	}
	data, _ := e.Checkpoint(nil, t0.Add(time.Minute))
	for n := range len(data) {
		next := mustEngine(t, cfg)
		if _, err := next.Load(data[:n], t0.Add(time.Minute), time.Time{}); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("a checkpoint cut at %d of %d bytes: %v", n, len(data), err)
		}
		if next.Stats().TrackedKeys != 0 {
			t.Fatalf("a refused checkpoint left %d keys", next.Stats().TrackedKeys)
		}
	}
	for i := range data {
		bad := slices.Clone(data)
		bad[i] ^= 0x20
		next := mustEngine(t, cfg)
		if _, err := next.Load(bad, t0.Add(time.Minute), time.Time{}); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("byte %d altered: %v", i, err)
		}
	}
}

// A checkpoint whose checksum holds but whose fields lie (written by a
// hand, not by authguard) is refused, and bounded: no count in it makes
// Load allocate beyond the data's own size.
func FuzzLoad(f *testing.F) {
	cfg := Config{MaxKeys: 64, Rules: []Rule{sec010(), enumeration()}}
	e := mustEngine(f, cfg)
	observe(e, tried("203.0.113.7", "alice", 0), nil)
	data, _ := e.Checkpoint(nil, t0.Add(time.Second))
	f.Add(data[:len(data)-4])
	f.Add([]byte("AGCK\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		next := mustEngine(t, cfg)
		next.Load(seal(body), t0.Add(time.Second), time.Time{}) // must not panic
	})
}

func seal(body []byte) []byte { return appendCRC(slices.Clone(body)) }

func TestTheIPv4AndIPv6KeysComeBackTheSame(t *testing.T) {
	cfg := Config{Rules: []Rule{sec010()}}
	e := mustEngine(t, cfg)
	for _, ip := range []string{"203.0.113.7", "2001:db8::7", "::ffff:192.0.2.1", "::"} {
		observe(e, failed(ip, 0), nil)
	}
	next, loaded := restart(t, e, cfg, t0.Add(time.Second), time.Time{})
	if loaded.Keys != 4 {
		t.Fatalf("loaded %+v", loaded)
	}
	for _, ip := range []string{"203.0.113.7", "2001:db8::7", "192.0.2.1", "::"} {
		a := netip.MustParseAddr(ip)
		if _, ok := next.rules[0].keys.idx.get(next.rules[0].group(a).As16(), next.rules[0].keys.keyOf); !ok {
			t.Errorf("%s is not tracked after the restart", ip)
		}
	}
}

func TestTheHorizonIsTheLongestThingACheckpointHolds(t *testing.T) {
	esc := sec010()
	esc.Name = "escalating"
	esc.Escalate = Escalation{Factor: 2, Max: 72 * time.Hour, Remember: 48 * time.Hour}
	for _, c := range []struct {
		rules []Rule
		want  time.Duration
	}{
		{[]Rule{sec010()}, 24 * time.Hour},
		{[]Rule{sec010(), esc}, 72 * time.Hour},
		{[]Rule{{Name: "short", Match: ActionAuthFailed, PerIP: true, Window: time.Minute, Threshold: 3}}, time.Hour},
	} {
		if got := mustEngine(t, Config{MaxKeys: 64, Rules: c.rules}).Horizon(); got != c.want {
			t.Errorf("%d rules: horizon %v, want %v", len(c.rules), got, c.want)
		}
	}
}

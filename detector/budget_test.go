package detector

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

func defaultRules() []Rule {
	return []Rule{sec010(), enumeration(), {Name: "surge", Match: ActionAuthFailed, Window: 5 * time.Minute, Threshold: 101, Alert: true}}
}

// Without max_tracked_keys the budget is shared among the rules that track
// keys, and all of them at their caps fit it.
func TestCapsShareTheMemoryBudget(t *testing.T) {
	cfg := Config{Rules: defaultRules(), MemoryBudget: 368 << 20}
	caps := cfg.Caps()
	if caps[2] != 1 {
		t.Errorf("a global rule capped at %d keys", caps[2])
	}
	for i := range 2 {
		half := (cfg.MemoryBudget - int64(KeyBytes(cfg.Rules[2]))) / 2
		if share := int64(caps[i]) * int64(KeyBytes(cfg.Rules[i])); share > half || share < half-int64(KeyBytes(cfg.Rules[i])) {
			t.Errorf("%s: %d keys, %s of a %s budget shared by two", cfg.Rules[i].Name, caps[i], MiB(share), MiB(cfg.MemoryBudget))
		}
	}
	if cfg.Footprint() > cfg.MemoryBudget {
		t.Errorf("footprint %s over the budget %s", MiB(cfg.Footprint()), MiB(cfg.MemoryBudget))
	}
	if err := Validate(cfg); err != nil {
		t.Error(err)
	}
	if got := (Config{Rules: defaultRules()}).Caps(); got[0] != DefaultMaxKeys || got[1] != DefaultMaxKeys {
		t.Errorf("no budget: caps %v, want the default", got)
	}
}

func TestCapsThatCannotFitTheBudgetAreRefused(t *testing.T) {
	cfg := Config{Rules: defaultRules(), MaxKeys: MaxKeysLimit, MemoryBudget: 368 << 20}
	err := Validate(cfg)
	if err == nil || !strings.Contains(err.Error(), "memory budget of 368 MiB") {
		t.Fatalf("validate: %v", err)
	}
	if _, err := New(cfg); err == nil {
		t.Error("an engine was built over its budget")
	}
}

// A reload that changes a rule's cap (max_tracked_keys, or a budget shared
// by one more rule) keeps its windows; a smaller cap keeps the blocked and
// the most recently seen keys, and counts the rest as evicted.
func TestAReloadWithAnotherCapKeepsTheWindows(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}, MaxKeys: 8})
	for i := range 8 {
		ip := fmt.Sprintf("192.0.2.%d", i)
		for k := range 4 {
			observe(e, failed(ip, time.Duration(i)*time.Minute+time.Duration(k)), nil)
		}
	}
	e, err := e.Reload(Config{Rules: []Rule{sec010()}, MaxKeys: 16})
	if err != nil {
		t.Fatal(err)
	}
	if ds := observe(e, failed("192.0.2.0", time.Hour), nil); len(ds) != 1 {
		t.Fatalf("fifth failure after a larger cap: %v, want a block", ds)
	}
	e, err = e.Reload(Config{Rules: []Rule{sec010()}, MaxKeys: 4})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.TrackedKeys != 4 || st.Evictions != 4 {
		t.Fatalf("after shrinking to 4: %+v", st)
	}
	// Kept: the blocked one and the three seen last (5, 6 and 7).
	for _, i := range []int{7, 6, 5} {
		if ds := observe(e, failed(fmt.Sprintf("192.0.2.%d", i), time.Hour+time.Minute), nil); len(ds) != 1 {
			t.Errorf("192.0.2.%d lost its window: %v", i, ds)
		}
	}
	if ds := observe(e, failed("192.0.2.0", time.Hour+time.Minute), nil); len(ds) != 1 || !ds[0].Renewal {
		t.Errorf("the blocked address lost its block: %v", ds)
	}
}

// heapAlloc is the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heapPerKey fills a table of rule r with n keys and returns the heap they
// take per key.
func heapPerKey(r Rule, n int) float64 {
	before := heapAlloc()
	e, _ := New(Config{Rules: []Rule{r}, MaxKeys: n})
	var a [16]byte
	a[0], a[1] = 0x20, 0x01
	for i := range n {
		a[8], a[9], a[10], a[11] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		for k := range r.Threshold - 1 { // full windows, just under the threshold
			ev := Event{Time: t0.Add(time.Duration(i*64 + k)), Action: ActionAuthFailed, IP: netip.AddrFrom16(a), Username: fmt.Sprint(k)}
			if r.GroupBy != "" { // a key per account, tried from many addresses
				a[15] = byte(k)
				ev.IP, ev.Username = netip.AddrFrom16(a), fmt.Sprint(i)
			}
			e.Observe(ev, ev.Time, nil)
		}
	}
	per := float64(heapAlloc()-before) / float64(n)
	runtime.KeepAlive(e)
	return per
}

// The budget counts what a key really costs: KeyBytes bounds the heap a
// full table takes.
func TestKeyBytesBoundsTheHeap(t *testing.T) {
	for _, r := range []Rule{sec010(), enumeration(), targetedAccount()} {
		if got := heapPerKey(r, 100_000); got > float64(KeyBytes(r)) {
			t.Errorf("%s: %.0f bytes a key on the heap, the budget counts %d", r.Name, got, KeyBytes(r))
		}
	}
}

// BenchmarkKeyBytes reports the heap a key takes in a full table of the
// default rules that track keys against what the budget counts for it.
func BenchmarkKeyBytes(b *testing.B) {
	for _, r := range []Rule{sec010(), enumeration(), targetedAccount()} {
		b.Run(r.Name, func(b *testing.B) {
			var per float64
			for range b.N {
				per = heapPerKey(r, 1_000_000)
			}
			b.ReportMetric(per, "heap-bytes/key")
			b.ReportMetric(float64(KeyBytes(r)), "budget-bytes/key")
		})
	}
}

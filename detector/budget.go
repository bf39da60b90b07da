package detector

import (
	"fmt"
	"sort"
	"unsafe"
)

// KeyBytes is what one tracked key of r costs at most in the detector's
// tables: its slot, its threshold timestamps (and value hashes, for a
// distinct rule), its index cell, and a quarter more because the arrays
// grow by about a quarter at a time. BenchmarkKeyBytes measures it.
func KeyBytes(r Rule) int {
	per := max(r.Threshold, 1)
	b := int(unsafe.Sizeof(slot{})) + 8*per + 4*4/3 + 4 // slot, timestamps, index cell, free-list entry
	if r.Distinct != "" {
		b += 8 * per
	}
	if r.GroupBy != "" {
		b += 16 * per // the sources
	}
	return b * 5 / 4
}

// minBudgetKeys is the fewest keys a budget gives a rule.
const minBudgetKeys = 1024

// Caps returns the keys each rule tracks at most, in cfg.Rules order: 1
// for a global rule; for the others cfg.MaxKeys when set, else an equal
// share of cfg.MemoryBudget each when that is set, else DefaultMaxKeys.
func (cfg Config) Caps() []int {
	grouped, avail := 0, cfg.MemoryBudget
	for _, r := range cfg.Rules {
		if r.keyed() {
			grouped++
		} else {
			avail -= int64(KeyBytes(r)) // a global rule's one key
		}
	}
	caps := make([]int, len(cfg.Rules))
	for i, r := range cfg.Rules {
		switch {
		case !r.keyed():
			caps[i] = 1
		case cfg.MaxKeys > 0:
			caps[i] = cfg.MaxKeys
		case cfg.MemoryBudget > 0:
			share := avail / int64(grouped) / int64(KeyBytes(r))
			caps[i] = int(min(max(share, minBudgetKeys), MaxKeysLimit))
		default:
			caps[i] = DefaultMaxKeys
		}
	}
	return caps
}

// Footprint is the most the rules' tables take, every rule at its cap.
func (cfg Config) Footprint() int64 {
	var total int64
	for i, c := range cfg.Caps() {
		total += int64(c) * int64(KeyBytes(cfg.Rules[i]))
	}
	return total
}

// checkBudget refuses caps that cannot fit cfg.MemoryBudget.
func (cfg Config) checkBudget() error {
	if cfg.MemoryBudget <= 0 {
		return nil
	}
	if need := cfg.Footprint(); need > cfg.MemoryBudget {
		return fmt.Errorf("the rules' windows need up to %s at their caps (max_tracked_keys %d), over the detector's memory budget of %s: lower max_tracked_keys (0 derives it from the budget) or raise the memory limit",
			MiB(need), cfg.MaxKeys, MiB(cfg.MemoryBudget))
	}
	return nil
}

// MiB formats a byte count in mebibytes.
func MiB(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// resize gives the table a new cap, keeping its windows: when it holds
// more keys than max, the blocked and then the most recently seen stay,
// and the rest count as evictions.
func (t *table) resize(max int) {
	if max == t.max {
		return
	}
	freed := make([]bool, len(t.slots))
	for _, i := range t.free {
		freed[i] = true
	}
	live := make([]int32, 0, t.idx.n)
	for i := range t.slots {
		if !freed[i] {
			live = append(live, int32(i))
		}
	}
	if len(live) > max {
		sort.Slice(live, func(a, b int) bool {
			sa, sb := &t.slots[live[a]], &t.slots[live[b]]
			if (sa.blockedUntil > 0) != (sb.blockedUntil > 0) {
				return sa.blockedUntil > 0
			}
			return sa.last > sb.last
		})
		t.evictions += uint64(len(live) - max)
		live = live[:max]
		sort.Slice(live, func(a, b int) bool { return live[a] < live[b] })
	}
	next := newTable(max, t.per, t.distinct, t.sources)
	next.evictions = t.evictions
	for _, i := range live {
		j := int32(len(next.slots))
		next.slots = append(next.slots, t.slots[i])
		e := t.entries(i)
		next.arena = append(next.arena, e.times...)
		next.hashes = append(next.hashes, e.hashes...)
		next.srcs = append(next.srcs, e.srcs...)
		next.idx.put(t.slots[i].key, j)
	}
	*t = *next
}

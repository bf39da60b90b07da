package loki

import "hash/maphash"

// dedup remembers the entries delivered recently, so that the same entry
// read twice (from a catch-up query and the live tail, or from two catch-up
// pages) is delivered once. An entry is its timestamp and line: Loki itself
// stores an exact repeat once, so two identical entries are one.
//
// It remembers entries within window of the newest timestamp seen, and at
// most max of them; older ones are forgotten in arrival order. Catch-up
// queries start no earlier than resumeFrom, so a forgotten entry cannot
// come back through one.
type dedup struct {
	seed      maphash.Seed
	window    int64
	max       int
	seen      map[dedupKey]struct{}
	order     []dedupKey // arrival order, a FIFO over a slice
	head      int
	highWater int64
	// maxPruned is the newest timestamp forgotten so far: every entry after
	// it is still remembered.
	maxPruned int64
}

type dedupKey struct {
	ts int64
	h  uint64
}

func newDedup(window int64, max int) *dedup {
	return &dedup{seed: maphash.MakeSeed(), window: window, max: max, seen: map[dedupKey]struct{}{}}
}

// first reports whether (ts, line) has not been delivered before, and
// remembers it.
func (d *dedup) first(ts int64, line string) bool {
	k := dedupKey{ts, maphash.String(d.seed, line)}
	if _, ok := d.seen[k]; ok {
		return false
	}
	d.seen[k] = struct{}{}
	d.order = append(d.order, k)
	if ts > d.highWater {
		d.highWater = ts
	}
	d.prune()
	return true
}

func (d *dedup) prune() {
	for d.head < len(d.order) {
		k := d.order[d.head]
		if len(d.seen) <= d.max && k.ts > d.highWater-d.window {
			break
		}
		delete(d.seen, k)
		d.maxPruned = max(d.maxPruned, k.ts)
		d.head++
	}
	// Compact the FIFO once its dead head outweighs the live part.
	if d.head > 1024 && d.head*2 > len(d.order) {
		d.order = append(d.order[:0], d.order[d.head:]...)
		d.head = 0
	}
}

// resumeFrom is where a catch-up after a gap must start: the window behind
// the newest entry, or later if the size bound already forgot entries there
// (every entry after maxPruned is still remembered, so none comes twice).
func (d *dedup) resumeFrom() int64 {
	if d.highWater == 0 {
		return 0
	}
	if d.maxPruned > 0 {
		return max(d.highWater-d.window, d.maxPruned+1)
	}
	return d.highWater - d.window
}

package loki

import (
	"container/heap"
	"hash/maphash"
)

// dedup remembers the entries delivered recently, so that the same entry
// read twice (from a catch-up query or a sweep and the live tail, or from
// two catch-up pages) is delivered once. An entry is its timestamp and line:
// Loki itself stores an exact repeat once, so two identical entries are one.
//
// Each entry is remembered with a time, at: the reader passes the entry's
// timestamp, the push receiver the time it arrived. Its owner says how far
// back entries are needed (forget): the reader never reads before that
// floor again, so nothing older can come twice. The floor comes from the
// owner's own clock, never from the newest entry timestamp, which a writer
// chooses: a line stamped a year ahead must not make every entry before it
// look old. At most max entries are kept; past that the oldest are
// forgotten first, and start tells reads where they may begin so that none
// is delivered twice.
type dedup struct {
	seed  maphash.Seed
	max   int
	seen  map[dedupKey]struct{}
	order keyHeap // the same keys, oldest first
	// maxEvicted is the newest time forgotten for want of room: every
	// entry after it is still remembered.
	maxEvicted int64
	evicted    uint64
}

type dedupKey struct {
	ts int64
	h  uint64
}

type remembered struct {
	at  int64
	key dedupKey
}

type keyHeap []remembered

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(remembered)) }
func (h *keyHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	*h = old[:len(old)-1]
	return k
}

func newDedup(max int) *dedup {
	return &dedup{seed: maphash.MakeSeed(), max: max, seen: map[dedupKey]struct{}{}}
}

// first reports whether (ts, line) has not been delivered before, and
// remembers it as of at.
func (d *dedup) first(ts int64, line string, at int64) bool {
	k := dedupKey{ts, maphash.String(d.seed, line)}
	if _, ok := d.seen[k]; ok {
		return false
	}
	d.seen[k] = struct{}{}
	heap.Push(&d.order, remembered{at, k})
	for len(d.order) > d.max {
		old := heap.Pop(&d.order).(remembered)
		delete(d.seen, old.key)
		d.maxEvicted = max(d.maxEvicted, old.at)
		d.evicted++
	}
	return true
}

// forget drops the entries remembered as of before floor.
func (d *dedup) forget(floor int64) {
	for len(d.order) > 0 && d.order[0].at < floor {
		delete(d.seen, heap.Pop(&d.order).(remembered).key)
	}
}

// start is where a read that wants to begin at from may begin without
// delivering an entry twice: from, or just after the newest entry
// forgotten for want of room (for owners that remember entries as of
// their timestamps).
func (d *dedup) start(from int64) int64 {
	if d.maxEvicted >= from {
		return d.maxEvicted + 1
	}
	return from
}

package detector

// table holds per-key window state in flat arrays so that a tracked key costs
// a fixed number of bytes and no pointers: the key, a slot, and threshold
// timestamps in one shared arena.
//
// Eviction rule: when the table is full, a key not seen recently is evicted,
// chosen by the CLOCK algorithm (an approximation of least recently seen
// that costs one flag write per event instead of list surgery): a hand
// sweeps the slots, clearing each one's "seen" flag and evicting the first
// slot found without it. A key that is blocked or at least half-way to its
// threshold is passed over, for up to evictScan slots, in favour of a
// colder one. An attacker spraying fresh addresses thus pushes out other
// one-off addresses before it can push out a key that is about to fire.
type table struct {
	idx       keyIndex
	slots     []slot
	arena     []int64
	hashes    []uint64   // distinct rules: the value hash beside each timestamp
	srcs      [][16]byte // rules grouped by a field: the client address beside each timestamp
	distinct  bool
	sources   bool
	per       int   // timestamps per slot (the threshold)
	hand      int32 // the CLOCK hand
	free      []int32
	max       int
	evictions uint64
}

const evictScan = 64

type slot struct {
	key          [16]byte
	n            uint16 // timestamps held
	active       bool   // alert incident open
	level        uint8  // severity rank of the open incident (0 the most severe)
	count        uint32 // tally since the clean slate
	first, last  int64
	blockedUntil int64
	lastOffence  int64  // time of the latest block
	offences     uint16 // blocks so far, for escalation; kept across clean slates
	seen         bool   // touched since the CLOCK hand last passed
}

func newTable(max, per int, distinct, sources bool) *table {
	return &table{idx: newKeyIndex(max), per: per, max: max, distinct: distinct, sources: sources}
}

// entries is one slot's kept events: their times in ascending order and,
// beside each, its value hash (distinct rules) and its client address
// (rules grouped by a field other than the address); nil when not kept.
type entries struct {
	times  []int64
	hashes []uint64
	srcs   [][16]byte
}

func (t *table) len() int { return t.idx.n }

// lookup finds key's slot without creating one.
func (t *table) lookup(key [16]byte) (int32, bool) { return t.idx.get(key, t.keyOf) }

// halfWay says the slot holds at least half of the threshold per: a key
// eviction passes over, and an address whose logins are suspect.
func (s *slot) halfWay(per int) bool { return int(s.n)*2 >= per }

func (t *table) keyOf(i int32) *[16]byte { return &t.slots[i].key }

// get returns the slot for key and its entries (the first n in use),
// creating the slot (and evicting if full), and marks it most recently
// seen.
func (t *table) get(key [16]byte, now int64) (*slot, entries) {
	if i, ok := t.lookup(key); ok {
		t.slots[i].seen = true
		return &t.slots[i], t.entries(i)
	}
	var i int32
	switch {
	case len(t.free) > 0:
		i = t.free[len(t.free)-1]
		t.free = t.free[:len(t.free)-1]
	case len(t.slots) < t.max:
		i = int32(len(t.slots))
		t.arena = append(t.arena, make([]int64, t.per)...)
		if t.distinct {
			t.hashes = append(t.hashes, make([]uint64, t.per)...)
		}
		if t.sources {
			t.srcs = append(t.srcs, make([][16]byte, t.per)...)
		}
		t.slots = append(t.slots, slot{})
	default:
		i = t.victim(now)
		t.idx.del(t.slots[i].key, t.keyOf)
		t.evictions++
	}
	s := &t.slots[i]
	*s = slot{key: key, seen: true}
	t.idx.put(key, i)
	return s, t.entries(i)
}

func (t *table) entries(i int32) entries {
	lo := int(i) * t.per
	hi := lo + t.per
	e := entries{times: t.arena[lo:hi:hi]}
	if t.distinct {
		e.hashes = t.hashes[lo:hi:hi]
	}
	if t.sources {
		e.srcs = t.srcs[lo:hi:hi]
	}
	return e
}

func (t *table) times(i int32) []int64 {
	lo := int(i) * t.per
	return t.arena[lo : lo+t.per : lo+t.per]
}

func (t *table) victim(now int64) int32 {
	passed := 0
	for {
		i := t.hand
		t.hand++
		if int(t.hand) == len(t.slots) {
			t.hand = 0
		}
		s := &t.slots[i]
		if s.seen {
			s.seen = false // a second chance
			continue
		}
		hot := s.blockedUntil > now || s.halfWay(t.per)
		if hot && passed < evictScan {
			passed++
			continue
		}
		return i
	}
}

func (t *table) remove(key [16]byte) {
	i, ok := t.lookup(key)
	if !ok {
		return
	}
	t.idx.del(key, t.keyOf)
	t.slots[i] = slot{}
	t.free = append(t.free, i)
}

// clear forgets the counted events; the block, if any, is kept.
func (s *slot) clear() {
	s.n, s.count, s.first, s.last, s.active = 0, 0, 0, 0, false
}

// insert records an event at t from src, keeping the newest len(times)
// timestamps in ascending order, and updates the tally.
func (s *slot) insert(e *entries, t int64, src *[16]byte) {
	s.tally(t)
	times := e.times
	full := int(s.n) == len(times)
	if full && t < times[0] {
		return // older than every kept timestamp: cannot change the newest N (of equal ones, the latest to arrive is kept)
	}
	if full {
		e.remove(0, int(s.n))
		s.n--
	}
	e.place(int(s.n), t, 0, src)
	s.n++
}

// tally counts one more event at t since the clean slate.
func (s *slot) tally(t int64) {
	s.count++
	if s.count == 1 || t < s.first {
		s.first = t
	}
	if t > s.last {
		s.last = t
	}
}

// remove drops entry i of the first n.
func (e *entries) remove(i, n int) {
	copy(e.times[i:], e.times[i+1:n])
	if e.hashes != nil {
		copy(e.hashes[i:], e.hashes[i+1:n])
	}
	if e.srcs != nil {
		copy(e.srcs[i:], e.srcs[i+1:n])
	}
}

// place inserts an entry at t into the first n (which has room for one
// more), keeping them in time order.
func (e *entries) place(n int, t int64, h uint64, src *[16]byte) {
	times := e.times
	j := n
	for j > 0 && times[j-1] > t {
		times[j] = times[j-1]
		if e.hashes != nil {
			e.hashes[j] = e.hashes[j-1]
		}
		if e.srcs != nil {
			e.srcs[j] = e.srcs[j-1]
		}
		j--
	}
	times[j] = t
	if e.hashes != nil {
		e.hashes[j] = h
	}
	if e.srcs != nil {
		e.srcs[j] = *src
	}
}

// insertDistinct records that the value with hash h was seen at t from
// src; the low bit of h carries a flag of that sighting (for logins: it
// succeeded) and values compare without it. The slot keeps, for the
// len(times) most recently seen distinct values, the time each was last
// seen, in ascending order: enough to tell whether at least len(times)
// distinct values fall in a window ending now.
func (s *slot) insertDistinct(e *entries, t int64, h uint64, src *[16]byte) {
	s.tally(t)
	times, hashes := e.times, e.hashes
	n := int(s.n)
	for i := 0; i < n; i++ {
		if hashes[i]>>1 != h>>1 {
			continue
		}
		if times[i] >= t {
			return // already seen later
		}
		e.remove(i, n)
		n--
		break
	}
	if n == len(times) {
		if t < times[0] {
			s.n = uint16(n)
			return // older than every kept value's last sighting
		}
		e.remove(0, n)
		n--
	}
	e.place(n, t, h, src)
	s.n = uint16(n + 1)
}

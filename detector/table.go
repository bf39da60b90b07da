package detector

// table holds per-key window state in flat arrays so that a tracked key costs
// a fixed number of bytes and no pointers: the key, a slot, and threshold
// timestamps in one shared arena.
//
// Eviction rule: when the table is full, the least recently seen key is
// evicted, except that up to evictScan of the least recent keys are examined
// and a key that is blocked or at least half-way to its threshold is passed
// over in favour of a colder one. An attacker spraying fresh addresses thus
// pushes out other one-off addresses before it can push out a key that is
// about to fire.
type table struct {
	idx       map[[16]byte]int32
	slots     []slot
	arena     []int64
	hashes    []uint64 // distinct rules: the value hash beside each timestamp
	distinct  bool
	per       int   // timestamps per slot (the threshold)
	head      int32 // most recently seen; -1 when empty
	tail      int32 // least recently seen
	free      []int32
	max       int
	evictions uint64
}

const evictScan = 8

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
	prev, next   int32
}

func newTable(max, per int, distinct bool) *table {
	return &table{idx: make(map[[16]byte]int32), per: per, max: max, head: -1, tail: -1, distinct: distinct}
}

func (t *table) len() int { return len(t.idx) }

// get returns the slot for key and its timestamps (sorted ascending, the
// first n in use), creating the slot (and evicting if full), and marks it most
// recently seen.
func (t *table) get(key [16]byte, now int64) (*slot, []int64) {
	if i, ok := t.idx[key]; ok {
		t.touch(i)
		return &t.slots[i], t.times(i)
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
		t.slots = append(t.slots, slot{})
	default:
		i = t.victim(now)
		delete(t.idx, t.slots[i].key)
		t.unlink(i)
		t.evictions++
	}
	s := &t.slots[i]
	*s = slot{key: key}
	t.idx[key] = i
	t.pushFront(i)
	return s, t.times(i)
}

func (t *table) times(i int32) []int64 {
	lo := int(i) * t.per
	return t.arena[lo : lo+t.per : lo+t.per]
}

// valueHashes is a distinct slot's hashes, beside its timestamps.
func (t *table) valueHashes(s *slot) []uint64 {
	if !t.distinct {
		return nil
	}
	lo := int(t.idx[s.key]) * t.per
	return t.hashes[lo : lo+t.per : lo+t.per]
}

func (t *table) victim(now int64) int32 {
	i := t.tail
	for k := 0; k < evictScan && i >= 0; k++ {
		s := &t.slots[i]
		hot := s.blockedUntil > now || int(s.n)*2 >= t.per
		if !hot {
			return i
		}
		i = s.prev
	}
	return t.tail
}

func (t *table) remove(key [16]byte) {
	i, ok := t.idx[key]
	if !ok {
		return
	}
	delete(t.idx, key)
	t.unlink(i)
	t.free = append(t.free, i)
}

func (t *table) touch(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
}

func (t *table) pushFront(i int32) {
	s := &t.slots[i]
	s.prev, s.next = -1, t.head
	if t.head >= 0 {
		t.slots[t.head].prev = i
	}
	t.head = i
	if t.tail < 0 {
		t.tail = i
	}
}

func (t *table) unlink(i int32) {
	s := &t.slots[i]
	if s.prev >= 0 {
		t.slots[s.prev].next = s.next
	} else if t.head == i {
		t.head = s.next
	}
	if s.next >= 0 {
		t.slots[s.next].prev = s.prev
	} else if t.tail == i {
		t.tail = s.prev
	}
	s.prev, s.next = -1, -1
}

// clear forgets the counted events; the block, if any, is kept.
func (s *slot) clear() {
	s.n, s.count, s.first, s.last, s.active = 0, 0, 0, 0, false
}

// insert records an event at t, keeping the newest len(times) timestamps in
// ascending order, and updates the tally.
func (s *slot) insert(times []int64, t int64) {
	s.count++
	if s.count == 1 || t < s.first {
		s.first = t
	}
	if t > s.last {
		s.last = t
	}
	full := int(s.n) == len(times)
	if full && t <= times[0] {
		return // older than every kept timestamp: cannot change the newest N
	}
	if full {
		copy(times, times[1:])
		s.n--
	}
	j := int(s.n)
	for j > 0 && times[j-1] > t {
		times[j] = times[j-1]
		j--
	}
	times[j] = t
	s.n++
}

// insertDistinct records that the value with hash h was seen at t; the low
// bit of h carries a flag of that sighting (for logins: it succeeded) and
// values compare without it. The slot
// keeps, for the len(times) most recently seen distinct values, the time
// each was last seen, in ascending order: enough to tell whether at least
// len(times) distinct values fall in a window ending now.
func (s *slot) insertDistinct(times []int64, hashes []uint64, t int64, h uint64) {
	s.count++
	if s.count == 1 || t < s.first {
		s.first = t
	}
	if t > s.last {
		s.last = t
	}
	n := int(s.n)
	for i := 0; i < n; i++ {
		if hashes[i]>>1 != h>>1 {
			continue
		}
		if times[i] >= t {
			return // already seen later
		}
		copy(times[i:], times[i+1:n])
		copy(hashes[i:], hashes[i+1:n])
		n--
		break
	}
	if n == len(times) {
		if t <= times[0] {
			s.n = uint16(n)
			return // older than every kept value's last sighting
		}
		copy(times, times[1:n])
		copy(hashes, hashes[1:n])
		n--
	}
	j := n
	for j > 0 && times[j-1] > t {
		times[j], hashes[j] = times[j-1], hashes[j-1]
		j--
	}
	times[j], hashes[j] = t, h
	s.n = uint16(n + 1)
}

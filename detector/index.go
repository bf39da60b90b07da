package detector

import "hash/maphash"

// keyIndex maps 16-byte keys to slot numbers with open addressing (linear
// probing, backward-shift deletion, at most half full). Each cell holds a
// 32-bit tag of the key's hash and the slot number, so a probe rarely
// touches a slot that is not the one looked for; with a million tracked
// addresses this is the hot path's main memory access. The hash is seeded
// per table, so an attacker cannot choose addresses that collide.
type keyIndex struct {
	seed  maphash.Seed
	cells []uint64 // tag<<32 | slot+1; 0 is empty
	mask  uint64
	n     int
}

func newKeyIndex(max int) keyIndex {
	size := 16
	for size < 2*max {
		size <<= 1
	}
	return keyIndex{seed: maphash.MakeSeed(), cells: make([]uint64, size), mask: uint64(size - 1)}
}

func (x *keyIndex) hash(k [16]byte) (pos uint64, tag uint64) {
	h := maphash.Comparable(x.seed, k)
	return h & x.mask, (h >> 32) | 1 // a tag is never 0
}

// get returns the slot of k, found by comparing keys through keyOf.
func (x *keyIndex) get(k [16]byte, keyOf func(int32) *[16]byte) (int32, bool) {
	pos, tag := x.hash(k)
	for {
		c := x.cells[pos]
		if c == 0 {
			return 0, false
		}
		if c>>32 == tag {
			if i := int32(c&0xffffffff) - 1; *keyOf(i) == k {
				return i, true
			}
		}
		pos = (pos + 1) & x.mask
	}
}

// put adds k (which must be absent) for slot i.
func (x *keyIndex) put(k [16]byte, i int32) {
	pos, tag := x.hash(k)
	for x.cells[pos] != 0 {
		pos = (pos + 1) & x.mask
	}
	x.cells[pos] = tag<<32 | uint64(i+1)
	x.n++
}

// del removes k, shifting later cells of its run back so that lookups never
// need tombstones.
func (x *keyIndex) del(k [16]byte, keyOf func(int32) *[16]byte) {
	pos, tag := x.hash(k)
	for {
		c := x.cells[pos]
		if c == 0 {
			return
		}
		if c>>32 == tag && *keyOf(int32(c&0xffffffff) - 1) == k {
			break
		}
		pos = (pos + 1) & x.mask
	}
	x.cells[pos] = 0
	x.n--
	hole := pos
	for next := (pos + 1) & x.mask; x.cells[next] != 0; next = (next + 1) & x.mask {
		c := x.cells[next]
		home, _ := x.hash(*keyOf(int32(c&0xffffffff) - 1))
		// Move c into the hole unless its home lies cyclically in
		// (hole, next], where it would no longer be found.
		if (next > hole && (home <= hole || home > next)) || (next < hole && home <= hole && home > next) {
			x.cells[hole] = c
			x.cells[next] = 0
			hole = next
		}
	}
}

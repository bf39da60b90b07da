package detector

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
)

// keyIndex maps 16-byte keys to slot numbers with open addressing (linear
// probing, backward-shift deletion, at most half full). Each cell holds a
// 32-bit tag of the key's hash and the slot number, so a probe rarely
// touches a slot that is not the one looked for; with a million tracked
// addresses this is the hot path's main memory access. The hash is seeded
// per table, so an attacker cannot choose addresses that collide.
type keyIndex struct {
	s0, s1 uint64   // secret per-table seeds
	cells  []uint64 // tag<<32 | slot+1; 0 is empty
	mask   uint64
	n      int
}

func newKeyIndex(max int) keyIndex {
	size := 16
	for size < 2*max {
		size <<= 1
	}
	seed := maphash.MakeSeed()
	return keyIndex{s0: maphash.Comparable(seed, 0) | 1, s1: maphash.Comparable(seed, 1) | 1, cells: make([]uint64, size), mask: uint64(size - 1)}
}

// hash mixes the key's two halves with the secret seeds through 128-bit
// multiplies (the construction of wyhash): a few nanoseconds, and without
// the seeds an attacker cannot aim addresses at one probe run.
func (x *keyIndex) hash(k [16]byte) (pos uint64, tag uint64) {
	a := binary.LittleEndian.Uint64(k[:8]) ^ x.s0
	b := binary.LittleEndian.Uint64(k[8:]) ^ x.s1
	hi, lo := bits.Mul64(a, b^0x9E3779B97F4A7C15)
	h := hi ^ lo
	hi, lo = bits.Mul64(h^x.s0, 0xBF58476D1CE4E5B9)
	h = hi ^ lo
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

package detector

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
)

// keyIndex maps 16-byte keys to slot numbers with open addressing (linear
// probing, backward-shift deletion, at most three quarters full). Each
// cell is 4 bytes: a tag of the key's hash above the slot number, so a
// probe rarely touches a slot that is not the one looked for, and the
// whole index stays small. With a million tracked addresses the index is
// the hot path's only random memory access, and its size decides whether
// that access also misses the TLB. The hash is seeded per table, so an
// attacker cannot choose addresses that collide.
type keyIndex struct {
	s0, s1   uint64   // secret per-table seeds
	cells    []uint32 // tag<<slotBits | slot+1; 0 is empty
	slotBits uint
	n        int
}

// newKeyIndex returns an empty index for up to max keys.
func newKeyIndex(max int) keyIndex {
	slotBits := uint(bits.Len(uint(max))) // slot+1 <= max fits
	if slotBits > 28 {
		panic("detector: key index holds at most 2^28 keys")
	}
	size := uint64(max)*4/3 + 16
	seed := maphash.MakeSeed()
	return keyIndex{s0: maphash.Comparable(seed, 0) | 1, s1: maphash.Comparable(seed, 1) | 1,
		cells: make([]uint32, size), slotBits: slotBits}
}

// hash mixes the key's two halves with the secret seeds through 128-bit
// multiplies (the construction of wyhash): a few nanoseconds, and without
// the seeds an attacker cannot aim addresses at one probe run. The
// position is the hash scaled to the table (no modulo); the tag comes from
// other bits of it, and is never zero, so a cell with a tag is never empty.
func (x *keyIndex) hash(k [16]byte) (pos uint64, tag uint32) {
	a := binary.LittleEndian.Uint64(k[:8]) ^ x.s0
	b := binary.LittleEndian.Uint64(k[8:]) ^ x.s1
	hi, lo := bits.Mul64(a, b^0x9E3779B97F4A7C15)
	h := hi ^ lo
	hi, lo = bits.Mul64(h^x.s0, 0xBF58476D1CE4E5B9)
	h = hi ^ lo
	pos, _ = bits.Mul64(h, uint64(len(x.cells)))
	tag = uint32(h) << x.slotBits
	if tag == 0 {
		tag = 1 << x.slotBits
	}
	return pos, tag
}

func (x *keyIndex) next(pos uint64) uint64 {
	pos++
	if pos == uint64(len(x.cells)) {
		return 0
	}
	return pos
}

func (x *keyIndex) slotOf(c uint32) int32 { return int32(c&(1<<x.slotBits-1)) - 1 }

// get returns the slot of k, found by comparing keys through keyOf.
func (x *keyIndex) get(k [16]byte, keyOf func(int32) *[16]byte) (int32, bool) {
	pos, tag := x.hash(k)
	mask := ^uint32(0) << x.slotBits
	for {
		c := x.cells[pos]
		if c == 0 {
			return 0, false
		}
		if c&mask == tag {
			if i := x.slotOf(c); *keyOf(i) == k {
				return i, true
			}
		}
		pos = x.next(pos)
	}
}

// put adds k (which must be absent) for slot i.
func (x *keyIndex) put(k [16]byte, i int32) {
	pos, tag := x.hash(k)
	for x.cells[pos] != 0 {
		pos = x.next(pos)
	}
	x.cells[pos] = tag | uint32(i+1)
	x.n++
}

// del removes k, shifting later cells of its run back so that lookups never
// need tombstones.
func (x *keyIndex) del(k [16]byte, keyOf func(int32) *[16]byte) {
	pos, tag := x.hash(k)
	mask := ^uint32(0) << x.slotBits
	for {
		c := x.cells[pos]
		if c == 0 {
			return
		}
		if c&mask == tag && *keyOf(x.slotOf(c)) == k {
			break
		}
		pos = x.next(pos)
	}
	x.cells[pos] = 0
	x.n--
	hole := pos
	for next := x.next(pos); x.cells[next] != 0; next = x.next(next) {
		c := x.cells[next]
		home, _ := x.hash(*keyOf(x.slotOf(c)))
		// Move c into the hole unless its home lies cyclically in
		// (hole, next], where it would no longer be found.
		if (next > hole && (home <= hole || home > next)) || (next < hole && home <= hole && home > next) {
			x.cells[hole] = c
			x.cells[next] = 0
			hole = next
		}
	}
}

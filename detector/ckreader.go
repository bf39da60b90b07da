package detector

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ckReader reads a checkpoint's fields; the first error sticks and every
// later read returns zero.
type ckReader struct {
	b   []byte
	err error
}

func (c *ckReader) fail(what string) {
	if c.err == nil {
		c.err = fmt.Errorf("%s: truncated or malformed", what)
	}
	c.b = nil
}

func (c *ckReader) bytes(n int, what string) []byte {
	if c.err != nil || n < 0 || n > len(c.b) {
		c.fail(what)
		return nil
	}
	p := c.b[:n]
	c.b = c.b[n:]
	return p
}

func (c *ckReader) u64() uint64 {
	p := c.bytes(8, "key")
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}

func (c *ckReader) uvarint() uint64 { return readVarint(c, "uvarint", binary.Uvarint) }

func (c *ckReader) varint() int64 { return readVarint(c, "varint", binary.Varint) }

// readVarint reads one varint with read (binary.Varint or Uvarint).
func readVarint[T int64 | uint64](c *ckReader, what string, read func([]byte) (T, int)) T {
	if c.err != nil {
		return 0
	}
	v, n := read(c.b)
	if n <= 0 {
		c.fail(what)
		return 0
	}
	c.b = c.b[n:]
	return v
}

func (c *ckReader) str() string {
	n := c.uvarint()
	if n > 4096 {
		c.fail("string")
		return ""
	}
	return string(c.bytes(int(n), "string"))
}

// slot reads one slot whose times are relative to saved.
func (c *ckReader) slot(ss *stagedSlot, saved int64, kind byte) {
	ss.s = slot{}
	s := &ss.s
	s.key = c.addr()
	fl := c.bytes(2, "flags")
	if fl == nil {
		return
	}
	flags := fl[0]
	s.active, s.level = flags&flagActive != 0, fl[1]
	s.count = uint32(min(c.uvarint(), math.MaxUint32))
	if flags&flagBlocked != 0 {
		s.blockedUntil = saved + c.varint()
	}
	if flags&flagOffence != 0 {
		s.offences = uint16(min(c.uvarint(), math.MaxUint16))
		s.lastOffence = saved + c.varint()
	}
	n := c.uvarint()
	if n > math.MaxUint16 || n > uint64(len(c.b)) {
		c.fail("timestamps")
		return
	}
	s.n = uint16(n)
	ss.times = slicesGrow(ss.times, int(n))
	oldest, newest := saved, saved
	for j := range ss.times {
		if j == 0 {
			newest = saved + c.varint()
			oldest = newest
		} else {
			newest += int64(c.uvarint())
		}
		ss.times[j] = newest
	}
	s.first, s.last = oldest+c.varint(), newest+c.varint()
	ss.hashes, ss.srcs = ss.hashes[:0], ss.srcs[:0]
	if kind&kindDistinct != 0 {
		ss.hashes = slicesGrow(ss.hashes, int(n))
		for j := range ss.hashes {
			ss.hashes[j] = c.u64()
		}
	}
	if kind&kindSources != 0 {
		ss.srcs = slicesGrow(ss.srcs, int(n))
		for j := range ss.srcs {
			ss.srcs[j] = c.addr()
		}
	}
}

// addr reads what appendAddr wrote.
func (c *ckReader) addr() [16]byte {
	var k [16]byte
	switch kind := c.bytes(1, "key kind"); {
	case kind == nil:
	case kind[0] == 4:
		k[10], k[11] = 0xff, 0xff
		copy(k[12:], c.bytes(4, "key"))
	case kind[0] == 16:
		copy(k[:], c.bytes(16, "key"))
	default:
		c.fail("key kind")
	}
	return k
}

// slicesGrow returns b with length n, reusing its array when it can.
func slicesGrow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}

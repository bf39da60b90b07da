package detector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"
)

// A checkpoint is the engine's state in a compact binary form, for a
// restarted daemon to count on where it stopped: each rule's tracked keys
// with their window timestamps (and, for distinct rules, value hashes),
// tallies, open incidents, blocks and offences. Only what still matters
// is written: a key whose window is empty, whose block has ended and whose
// offences are forgotten is left out. IPv4 keys take 4 bytes, times are
// varints relative to the save time (window timestamps as gaps between
// them), and a CRC-32 closes it: a torn or altered checkpoint is refused
// whole, never half-read.
//
// Layout: "AGCK" 1 | k0 k1 (8 bytes each) | now | watermark | rules, each
// name, counting fingerprint, slots, each slot key | flags | level | count
// | offences | first | last | [blockedUntil] | [lastOffence] | n | times
// (| hashes) ... | CRC-32 (IEEE, 4 bytes, of all before it).
var checkpointMagic = []byte("AGCK\x01")

// CheckpointLimit bounds a checkpoint Load reads: the largest the state
// of MaxKeysLimit keys can take, with room.
const CheckpointLimit = 1 << 30

const (
	flagActive = 1 << iota
	flagBlocked
	flagOffence
)

// Checkpoint appends the engine's state as of now to buf and returns it,
// with the number of keys written.
func (e *Engine) Checkpoint(buf []byte, now time.Time) ([]byte, int) {
	at := now.UnixNano()
	buf = append(buf, checkpointMagic...)
	buf = binary.LittleEndian.AppendUint64(buf, e.k0)
	buf = binary.LittleEndian.AppendUint64(buf, e.k1)
	buf = binary.AppendVarint(buf, at)
	buf = binary.AppendVarint(buf, e.watermark-at)
	buf = binary.AppendUvarint(buf, uint64(len(e.rules)))
	keys, ref := 0, e.earliest(e.watermark, at)
	for _, r := range e.rules {
		buf = appendString(buf, r.Name)
		buf = appendString(buf, r.fingerprint())
		t := r.table()
		buf = append(buf, t.kind())
		countAt := len(buf)
		buf = append(buf, make([]byte, binary.MaxVarintLen64)...) // the slot count, filled in below
		n := 0
		for i := range t.slots {
			s := &t.slots[i]
			if !r.worthKeeping(s, t.times(int32(i)), ref) {
				continue
			}
			buf = t.appendSlot(buf, int32(i), at)
			n++
		}
		// A fixed-width varint: padded with continuation bytes.
		putPaddedUvarint(buf[countAt:countAt+binary.MaxVarintLen64], uint64(n))
		keys += n
	}
	return appendCRC(buf), keys
}

// appendCRC closes a checkpoint with the checksum of all of it.
func appendCRC(buf []byte) []byte {
	return binary.LittleEndian.AppendUint32(buf, crc32.ChecksumIEEE(buf))
}

// table is the rule's key table, per-IP or global.
func (r *ruleState) table() *table {
	if r.keys != nil {
		return r.keys
	}
	return r.global
}

// fingerprint names how the rule counts (see sameCounting): a checkpoint's
// windows are loaded only into a rule that counts the same way.
func (r *ruleState) fingerprint() string {
	fp := fmt.Sprintf("%s|%t|%d|%d|%d|%d|%s|%g", r.Match, r.PerIP, r.IPv4Prefix, r.IPv6Prefix,
		r.Window, r.Threshold, r.Distinct, r.MinSuccessRatio)
	if r.GroupBy != "" {
		fp += "|" + r.GroupBy // older checkpoints' rules had no field groups
	}
	return fp
}

// earliest is the oldest time an event can still be counted at, for an
// engine whose newest event is at watermark (0: none yet) and whose clock
// reads at: older events are too late (see Config.Tolerance).
func (e *Engine) earliest(watermark, at int64) int64 {
	if watermark == 0 {
		return math.MinInt64 / 2 // nothing counted yet: everything may matter
	}
	return min(watermark, at) - e.tolerance
}

// worthKeeping reports whether a slot holds anything an event at ref or
// later could depend on: events in the window, a block that stands, or
// offences escalation still remembers. A freed slot is all zero and holds
// nothing.
func (r *ruleState) worthKeeping(s *slot, times []int64, ref int64) bool {
	switch {
	case s.n > 0 && times[s.n-1] > ref-r.window:
		return true
	case s.blockedUntil > ref:
		return true
	case s.offences > 0 && r.Escalate.Factor > 1:
		return r.Escalate.Remember <= 0 || ref-s.lastOffence <= int64(r.Escalate.Remember)
	}
	return false
}

// Table kinds: what a slot holds beside its timestamps.
const (
	kindDistinct = 1 << iota // value hashes
	kindSources              // client addresses
)

func (t *table) kind() byte {
	var k byte
	if t.distinct {
		k |= kindDistinct
	}
	if t.sources {
		k |= kindSources
	}
	return k
}

// appendAddr writes a key or address: 4 and its IPv4 bytes, or 16 and all.
func appendAddr(buf []byte, k [16]byte) []byte {
	if netipMapped(k) {
		buf = append(buf, 4)
		return append(buf, k[12:]...)
	}
	buf = append(buf, 16)
	return append(buf, k[:]...)
}

func (t *table) appendSlot(buf []byte, i int32, at int64) []byte {
	s := &t.slots[i]
	buf = appendAddr(buf, s.key)
	var flags byte
	if s.active {
		flags |= flagActive
	}
	if s.blockedUntil != 0 {
		flags |= flagBlocked
	}
	if s.offences != 0 {
		flags |= flagOffence
	}
	buf = append(buf, flags, s.level)
	buf = binary.AppendUvarint(buf, uint64(s.count))
	if flags&flagBlocked != 0 {
		buf = binary.AppendVarint(buf, s.blockedUntil-at)
	}
	if flags&flagOffence != 0 {
		buf = binary.AppendUvarint(buf, uint64(s.offences))
		buf = binary.AppendVarint(buf, s.lastOffence-at)
	}
	// The timestamps, then the tally's first and last relative to the
	// oldest and newest of them (the same, mostly: one byte each).
	buf = binary.AppendUvarint(buf, uint64(s.n))
	times := t.times(i)[:s.n]
	oldest, newest := at, at
	for j, ts := range times {
		if j == 0 {
			buf = binary.AppendVarint(buf, ts-at)
			oldest = ts
		} else {
			buf = binary.AppendUvarint(buf, uint64(ts-newest))
		}
		newest = ts
	}
	buf = binary.AppendVarint(buf, s.first-oldest)
	buf = binary.AppendVarint(buf, s.last-newest)
	e := t.entries(i)
	for _, h := range e.hashes[:min(len(e.hashes), int(s.n))] {
		buf = binary.LittleEndian.AppendUint64(buf, h)
	}
	for _, a := range e.srcs[:min(len(e.srcs), int(s.n))] {
		buf = appendAddr(buf, a)
	}
	return buf
}

func netipMapped(k [16]byte) bool {
	for _, b := range k[:10] {
		if b != 0 {
			return false
		}
	}
	return k[10] == 0xff && k[11] == 0xff
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func putPaddedUvarint(b []byte, v uint64) {
	for i := range b {
		b[i] = byte(v) | 0x80
		v >>= 7
	}
	b[len(b)-1] &^= 0x80
}

// Loaded says what Load took from a checkpoint.
type Loaded struct {
	// Saved is when the checkpoint was written.
	Saved time.Time
	// Keys is how many tracked keys were loaded.
	Keys int
	// Skipped names the checkpoint's rules that were not loaded: gone from
	// the rules, or counting another way now.
	Skipped []string
}

// ErrCheckpoint is wrapped by every error of a checkpoint that cannot be
// read: torn, altered, or of another format.
var ErrCheckpoint = errors.New("checkpoint unreadable")

// Load counts on from a checkpoint: it puts the state of each rule that
// still counts the same way into the engine, as of now. It is meant for an
// engine that has not counted yet; what it holds of a loaded key is
// replaced. A checkpoint that fails its checksum or does not parse is
// refused whole (ErrCheckpoint) and the engine is left as it was.
//
// A zero replayFrom loads everything (a daemon fed by pushes alone). A
// daemon that re-reads its log source from replayFrom on start passes it:
// the window timestamps from replayFrom on are left out, and so is their
// part in the tallies, because the re-read counts those events again;
// blocks, offences and older timestamps are loaded, so the re-read renews
// a block the checkpoint holds rather than making it anew.
func (e *Engine) Load(data []byte, now, replayFrom time.Time) (Loaded, error) {
	if len(data) < len(checkpointMagic)+4 || string(data[:len(checkpointMagic)]) != string(checkpointMagic) {
		return Loaded{}, fmt.Errorf("%w: not an authguard checkpoint", ErrCheckpoint)
	}
	body := data[:len(data)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[len(body):]) {
		return Loaded{}, fmt.Errorf("%w: checksum mismatch (torn or altered)", ErrCheckpoint)
	}
	// Read it twice: once to check every field, then to load, so that a
	// checkpoint that fails half-way leaves the engine untouched, and no
	// copy of the whole state is held meanwhile.
	if _, err := e.walk(body, now, replayFrom, false); err != nil {
		return Loaded{}, err
	}
	return e.walk(body, now, replayFrom, true)
}

// walk reads a checkpoint's body; with apply it loads it into the engine.
func (e *Engine) walk(body []byte, now, replayFrom time.Time, apply bool) (Loaded, error) {
	c := &ckReader{b: body[len(checkpointMagic):]}
	k0, k1 := c.u64(), c.u64()
	saved := c.varint()
	watermark := saved + c.varint()
	nrules := c.uvarint()
	out := Loaded{Saved: time.Unix(0, saved).UTC()}
	at, from := now.UnixNano(), replayFrom.UnixNano()
	if replayFrom.IsZero() {
		from = math.MaxInt64
	}
	ref := e.earliest(min(watermark, from), at)
	if apply {
		e.k0, e.k1 = k0, k1
		if replayFrom.IsZero() {
			e.watermark = max(e.watermark, min(watermark, at))
		}
	}
	var ss stagedSlot
	for range nrules {
		name, fp := c.str(), c.str()
		kind := c.bytes(1, "rule kind")
		n := c.uvarint()
		if c.err != nil {
			break
		}
		r := e.rule(name)
		keep := r != nil && r.fingerprint() == fp && r.table().kind() == kind[0]
		if !keep {
			out.Skipped = append(out.Skipped, name)
		}
		for range n {
			c.slot(&ss, saved, kind[0])
			if c.err != nil {
				break
			}
			if !keep {
				continue
			}
			if int(ss.s.n) > r.Threshold {
				c.err = fmt.Errorf("rule %q: %d timestamps for a threshold of %d", name, ss.s.n, r.Threshold)
				break
			}
			ss.cut(from)
			if !r.worthKeeping(&ss.s, ss.times, ref) {
				continue
			}
			out.Keys++
			if apply {
				ss.put(r.table(), at)
			}
		}
	}
	if c.err == nil && len(c.b) != 0 {
		c.err = fmt.Errorf("%d bytes after the last rule", len(c.b))
	}
	if c.err != nil {
		return Loaded{}, fmt.Errorf("%w: %v", ErrCheckpoint, c.err)
	}
	return out, nil
}

type stagedSlot struct {
	s      slot
	times  []int64
	hashes []uint64
	srcs   [][16]byte
}

// cut leaves out the timestamps from from on, and their part in the
// tally: what remains is counted as the run so far.
func (ss *stagedSlot) cut(from int64) {
	n := int(ss.s.n)
	for n > 0 && ss.times[n-1] >= from {
		n--
	}
	if n == int(ss.s.n) {
		return
	}
	ss.times, ss.s.n, ss.s.active = ss.times[:n], uint16(n), false
	if len(ss.hashes) > 0 {
		ss.hashes = ss.hashes[:n]
	}
	if len(ss.srcs) > 0 {
		ss.srcs = ss.srcs[:n]
	}
	ss.s.count, ss.s.first, ss.s.last = uint32(n), 0, 0
	if n > 0 {
		ss.s.first, ss.s.last = ss.times[0], ss.times[n-1]
	}
}

// put writes the slot into t, evicting as an event would when t is full.
func (ss *stagedSlot) put(t *table, at int64) {
	s, e := t.get(ss.s.key, at)
	*s = ss.s
	s.seen = true
	copy(e.times, ss.times)
	copy(e.hashes, ss.hashes)
	copy(e.srcs, ss.srcs)
}

// Horizon is how long a checkpoint taken now can matter: the longest of
// the rules' windows, blocks (escalated to their Max; a year at most) and
// escalation memories, and an hour at least. A store may let it expire
// after that.
func (e *Engine) Horizon() time.Duration {
	h := time.Hour
	for _, r := range e.rules {
		ttl := r.BlockTTL
		if r.Escalate.Factor > 1 {
			ttl = r.Escalate.ttl(r.BlockTTL, math.MaxUint16)
		}
		h = max(h, r.Window, min(ttl, 365*24*time.Hour), r.Escalate.Remember)
	}
	return h
}

package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"

	"github.com/authguard/authguard/responder/backoff"
	"github.com/authguard/authguard/responder/blockset"
)

// Blocklist is the gateway's in-memory copy of the blocks in Redis, so that
// checking a request costs no network round trip. Entries expire on their
// own TTL. An address's entry is 16 bytes of address and 16 of expiry and
// pass mark in one map without pointers: a million blocks take 84 MB with
// the map's room to grow (BenchmarkBlocklistMemory), and the garbage
// collector never walks them. Networks are in a prefix table (bart), looked
// at only when there is one.
type Blocklist struct {
	mu      sync.RWMutex
	entries map[[16]byte]entry
	nets    bart.Table[entry]
	// gen numbers the full passes over Redis: an entry a pass did not see
	// (and no event touched meanwhile) is gone from Redis.
	gen     uint32
	passing bool
	// touched records the targets changed by events since the current
	// pass began, so that a slower SCAN cannot undo a newer event.
	touched map[netip.Prefix]struct{}
	loaded  atomic.Bool
}

type entry struct {
	exp int64 // Unix nanoseconds; 0 = until deleted
	gen uint32
}

// left says whether the entry blocks at now, and for how much longer
// (zero when it has no expiry).
func (e entry) left(now int64) (bool, time.Duration) {
	if e.exp == 0 {
		return true, 0
	}
	left := time.Duration(e.exp - now)
	return left > 0, left
}

// NewBlocklist returns an empty, not yet loaded, blocklist.
func NewBlocklist() *Blocklist {
	return &Blocklist{entries: map[[16]byte]entry{}, touched: map[netip.Prefix]struct{}{}}
}

func key(ip netip.Addr) [16]byte { return ip.Unmap().As16() }

// Loaded reports whether the list has been read from Redis at least once.
func (b *Blocklist) Loaded() bool { return b.loaded.Load() }

// Len is the number of entries held, expired or not.
func (b *Blocklist) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.entries) + b.nets.Size()
}

// Blocked reports whether ip is blocked at now, by its own block or a
// network's, and for how much longer (zero when the block has no expiry):
// the longest of those that cover it.
func (b *Blocklist) Blocked(ip netip.Addr, now time.Time) (bool, time.Duration) {
	k := key(ip)
	b.mu.RLock()
	e, ok := b.entries[k]
	nets := b.nets.Size() > 0
	b.mu.RUnlock()
	var blocked bool
	var left time.Duration
	if ok {
		blocked, left = e.left(now.UnixNano())
	}
	if !nets || blocked && left == 0 {
		return blocked, left
	}
	return b.blockedByNetwork(ip, now, blocked, left)
}

// blockedByNetwork adds the networks that cover ip to what its own entry
// said.
func (b *Blocklist) blockedByNetwork(ip netip.Addr, now time.Time, blocked bool, left time.Duration) (bool, time.Duration) {
	t := now.UnixNano()
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, n := range b.nets.Supernets(blockset.Host(ip)) {
		v, l := n.left(t)
		switch {
		case !v:
		case l == 0:
			return true, 0
		case !blocked || l > left:
			blocked, left = true, l
		}
	}
	return blocked, left
}

func nanos(exp time.Time) int64 {
	if exp.IsZero() {
		return 0
	}
	return exp.UnixNano()
}

// put sets a target's entry; b.mu is held.
func (b *Blocklist) put(t netip.Prefix, e entry) {
	if t.IsSingleIP() {
		b.entries[key(t.Addr())] = e
	} else {
		b.nets.Insert(t, e)
	}
}

// remove deletes a target's entry; b.mu is held.
func (b *Blocklist) remove(t netip.Prefix) {
	if t.IsSingleIP() {
		delete(b.entries, key(t.Addr()))
	} else {
		b.nets.Delete(t)
	}
}

// set records a block found outside the changes (a Redis look-up on a miss).
func (b *Blocklist) set(ip netip.Addr, exp time.Time) {
	b.mu.Lock()
	b.put(blockset.Host(ip), entry{nanos(exp), b.gen})
	b.mu.Unlock()
}

// apply takes one change: a block or an unblock. It reports whether a
// block is new to the list (or ends later than it held): the same block
// arrives by pub/sub and by the changes stream.
func (b *Blocklist) apply(ev blockset.Event) (fresh bool) {
	t, err := blockset.ParseTarget(ev.IP)
	if err != nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.passing {
		b.touched[t] = struct{}{}
	}
	switch ev.Op {
	case "block":
		exp := time.UnixMilli(ev.ExpiresMS).UnixNano()
		fresh = b.expiry(t) != exp
		b.put(t, entry{exp, b.gen})
	case "unblock":
		b.remove(t)
	}
	return fresh
}

// expiry is the end a target's own entry holds (-1: none); b.mu is held.
func (b *Blocklist) expiry(t netip.Prefix) int64 {
	if t.IsSingleIP() {
		if e, ok := b.entries[key(t.Addr())]; ok {
			return e.exp
		}
		return -1
	}
	if e, ok := b.nets.Get(t); ok {
		return e.exp
	}
	return -1
}

// beginPass starts a full pass: events from now on win over what it reads.
func (b *Blocklist) beginPass() uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	b.passing = true
	clear(b.touched)
	return b.gen
}

// mark records a block the pass found.
func (b *Blocklist) mark(t netip.Prefix, exp time.Time, _ bool) {
	b.mu.Lock()
	if _, ok := b.touched[t]; !ok {
		b.put(t, entry{nanos(exp), b.gen})
	}
	b.mu.Unlock()
}

// endPass ends a pass that read Redis whole: what it did not find, and no
// event added meanwhile, is gone.
func (b *Blocklist) endPass(gen uint32) {
	b.mu.Lock()
	for k, e := range b.entries {
		if e.gen == gen {
			continue
		}
		if len(b.touched) > 0 {
			if _, ok := b.touched[blockset.Host(netip.AddrFrom16(k))]; ok {
				continue
			}
		}
		delete(b.entries, k)
	}
	var gone []netip.Prefix
	for t, e := range b.nets.All() {
		if _, ok := b.touched[t]; !ok && e.gen != gen {
			gone = append(gone, t)
		}
	}
	for _, t := range gone {
		b.nets.Delete(t)
	}
	b.passing = false
	clear(b.touched)
	b.mu.Unlock()
	b.loaded.Store(true)
}

// abortPass ends a pass that did not read Redis whole: nothing is removed.
func (b *Blocklist) abortPass() {
	b.mu.Lock()
	b.passing = false
	clear(b.touched)
	b.mu.Unlock()
}

// replace makes the list hold exactly scanned, as a whole pass finding it
// would (events during the pass excepted).
func (b *Blocklist) replace(scanned map[netip.Prefix]time.Time) {
	gen := b.beginPass()
	for t, exp := range scanned {
		b.mark(t, exp, true)
	}
	b.endPass(gen)
}

// Syncer keeps a Blocklist in step with Redis: pub/sub events at once; an
// incremental reconcile that follows the changes stream, where every block
// and unblock authguard writes is an entry, so that what pub/sub lost (it
// keeps nothing for a subscriber that was away) is read on from where it
// was; and a full read at start, every Interval (which is what picks up
// blocks set or deleted by hand with redis-cli) and when the stream was
// trimmed past what it had read. Its cost is the change, plus one full
// read per Interval.
type Syncer struct {
	Store    *blockset.Reader
	List     *Blocklist
	Interval time.Duration
	Log      *slog.Logger
	// OnReconcile is called after each full read with its outcome.
	OnReconcile func(err error)
	// Enforced, when set, is told when each block the daemon wrote was,
	// as it first enters the list.
	Enforced func(writtenAt time.Time)

	sawEpoch bool        // the daemon's epoch key was there at a full read
	lost     atomic.Bool // it is gone since: Redis lost its data
	again    chan struct{}
}

// StateLost says Redis was found to have lost its data (the daemon's epoch
// key gone) and the blocks already known are enforced until the daemon
// has written them again.
func (s *Syncer) StateLost() bool { return s.lost.Load() }

// changesBatch is the most changes read at once.
const changesBatch = 1000

// Run syncs until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	s.again = make(chan struct{}, 1)
	go s.Store.Subscribe(ctx, s.take, nil)
	// The stream is followed from its newest entry before the first full
	// read: what changes during it is applied after it.
	var from string
	for attempt := 0; ; attempt++ {
		var err error
		if from, err = s.Store.LastChange(ctx); err == nil {
			err = s.reconcile(ctx)
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Jitter(attempt, 250*time.Millisecond, min(s.Interval, 5*time.Second))):
		}
	}
	go s.follow(ctx, from)
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.again:
		}
		s.reconcile(ctx)
	}
}

// follow applies the changes stream's entries after from as they come.
func (s *Syncer) follow(ctx context.Context, from string) {
	last, fails := from, 0
	for ctx.Err() == nil {
		cs, err := s.Store.Changes(ctx, last, changesBatch, time.Second)
		if err != nil {
			fails++
			select {
			case <-ctx.Done():
			case <-time.After(backoff.Jitter(fails, 250*time.Millisecond, 5*time.Second)):
			}
			continue
		}
		// After an outage, or this far behind, the stream may have been
		// trimmed past last: then only a full read is sure.
		if fails > 0 || len(cs) == changesBatch {
			if missed, err := s.Store.Missed(ctx, last); err == nil && missed {
				s.Log.Warn("the changes stream was trimmed past what this gateway had read; reading the blocks in full")
				select {
				case s.again <- struct{}{}:
				default:
				}
			}
		}
		fails = 0
		for _, c := range cs {
			s.take(c.Event)
			last = c.ID
		}
	}
}

// take applies one change, telling Enforced of a block new to the list.
func (s *Syncer) take(ev blockset.Event) {
	if s.List.apply(ev) && ev.AtMS > 0 && s.Enforced != nil {
		s.Enforced(time.UnixMilli(ev.AtMS))
	}
}

func (s *Syncer) reconcile(ctx context.Context) error {
	gen := s.List.beginPass()
	err := s.Store.Scan(ctx, nil, s.List.mark)
	var epoch bool
	if err == nil {
		epoch, err = s.Store.HasEpoch(ctx)
	}
	s.lost.Store(err == nil && s.sawEpoch && !epoch)
	switch {
	case err == nil && s.sawEpoch && !epoch:
		// Redis came back empty: what it lost is still enforced, each
		// block to its own end, until the daemon has written them again.
		s.List.abortPass()
		s.Log.Warn("redis has lost its data (the epoch key is gone); enforcing the blocks already known until authguard writes them again", "known", s.List.Len())
	case err == nil:
		s.sawEpoch = s.sawEpoch || epoch
		s.List.endPass(gen)
	default:
		s.List.abortPass()
		if ctx.Err() == nil {
			s.Log.Warn("reconciling blocks from redis failed; enforcing the blocks already known", "err", err)
		}
	}
	if s.OnReconcile != nil {
		s.OnReconcile(err)
	}
	return err
}

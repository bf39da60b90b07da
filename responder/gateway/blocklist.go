package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authguard/authguard/responder/backoff"
	"github.com/authguard/authguard/responder/blockset"
)

// Blocklist is the gateway's in-memory copy of the blocks in Redis, so that
// checking a request costs no network round trip. Entries expire on their
// own TTL. An entry is 16 bytes of address and 16 of expiry and pass mark
// in one map without pointers: a million blocks take 84 MB with the map's
// room to grow (BenchmarkBlocklistMemory), and the garbage collector never
// walks them.
type Blocklist struct {
	mu      sync.RWMutex
	entries map[[16]byte]entry
	// gen numbers the full passes over Redis: an entry a pass did not see
	// (and no event touched meanwhile) is gone from Redis.
	gen     uint32
	passing bool
	// touched records the IPs changed by events since the current pass
	// began, so that a slower SCAN cannot undo a newer event.
	touched map[[16]byte]struct{}
	loaded  atomic.Bool
}

type entry struct {
	exp int64 // Unix nanoseconds; 0 = until deleted
	gen uint32
}

// NewBlocklist returns an empty, not yet loaded, blocklist.
func NewBlocklist() *Blocklist {
	return &Blocklist{entries: map[[16]byte]entry{}, touched: map[[16]byte]struct{}{}}
}

func key(ip netip.Addr) [16]byte { return ip.Unmap().As16() }

// Loaded reports whether the list has been read from Redis at least once.
func (b *Blocklist) Loaded() bool { return b.loaded.Load() }

// Len is the number of entries held, expired or not.
func (b *Blocklist) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.entries)
}

// Blocked reports whether ip is blocked at now and for how much longer
// (zero when the block has no expiry).
func (b *Blocklist) Blocked(ip netip.Addr, now time.Time) (bool, time.Duration) {
	k := key(ip)
	b.mu.RLock()
	e, ok := b.entries[k]
	b.mu.RUnlock()
	if !ok {
		return false, 0
	}
	if e.exp == 0 {
		return true, 0
	}
	left := time.Duration(e.exp - now.UnixNano())
	return left > 0, left
}

func nanos(exp time.Time) int64 {
	if exp.IsZero() {
		return 0
	}
	return exp.UnixNano()
}

// set records a block found outside the changes (a Redis look-up on a miss).
func (b *Blocklist) set(ip netip.Addr, exp time.Time) {
	b.mu.Lock()
	b.entries[key(ip)] = entry{nanos(exp), b.gen}
	b.mu.Unlock()
}

// apply takes one change: a block or an unblock.
func (b *Blocklist) apply(ev blockset.Event) {
	ip, err := netip.ParseAddr(ev.IP)
	if err != nil {
		return
	}
	k := key(ip)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.passing {
		b.touched[k] = struct{}{}
	}
	switch ev.Op {
	case "block":
		b.entries[k] = entry{time.UnixMilli(ev.ExpiresMS).UnixNano(), b.gen}
	case "unblock":
		delete(b.entries, k)
	}
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
func (b *Blocklist) mark(ip netip.Addr, exp time.Time, _ bool) {
	k := key(ip)
	b.mu.Lock()
	if _, ok := b.touched[k]; !ok {
		b.entries[k] = entry{nanos(exp), b.gen}
	}
	b.mu.Unlock()
}

// endPass ends a pass that read Redis whole: what it did not find, and no
// event added meanwhile, is gone.
func (b *Blocklist) endPass(gen uint32) {
	b.mu.Lock()
	for k, e := range b.entries {
		if _, ok := b.touched[k]; !ok && e.gen != gen {
			delete(b.entries, k)
		}
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
func (b *Blocklist) replace(scanned map[netip.Addr]time.Time) {
	gen := b.beginPass()
	for ip, exp := range scanned {
		b.mark(ip, exp, true)
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
	go s.Store.Subscribe(ctx, s.List.apply, nil)
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
			s.List.apply(c.Event)
			last = c.ID
		}
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

package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authguard/authguard/responder/blockset"
)

// Blocklist is the gateway's in-memory copy of the blocks in Redis, so that
// checking a request costs no network round trip. Entries expire on their
// own TTL.
type Blocklist struct {
	mu      sync.RWMutex
	entries map[netip.Addr]int64 // expiry in Unix nanoseconds; 0 = until deleted
	// events records IPs changed by pub/sub since the current reconcile
	// began, so that a slower SCAN cannot undo a newer event.
	events map[netip.Addr]struct{}
	loaded atomic.Bool
}

// NewBlocklist returns an empty, not yet loaded, blocklist.
func NewBlocklist() *Blocklist {
	return &Blocklist{entries: map[netip.Addr]int64{}, events: map[netip.Addr]struct{}{}}
}

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
	b.mu.RLock()
	exp, ok := b.entries[ip]
	b.mu.RUnlock()
	if !ok {
		return false, 0
	}
	if exp == 0 {
		return true, 0
	}
	left := time.Duration(exp - now.UnixNano())
	return left > 0, left
}

// set records a block found outside pub/sub (a Redis look-up on a miss).
func (b *Blocklist) set(ip netip.Addr, exp time.Time) {
	var ns int64
	if !exp.IsZero() {
		ns = exp.UnixNano()
	}
	b.mu.Lock()
	b.entries[ip] = ns
	b.mu.Unlock()
}

func (b *Blocklist) apply(ev blockset.Event) {
	ip, err := netip.ParseAddr(ev.IP)
	if err != nil {
		return
	}
	ip = ip.Unmap()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events[ip] = struct{}{}
	switch ev.Op {
	case "block":
		b.entries[ip] = time.UnixMilli(ev.ExpiresMS).UnixNano()
	case "unblock":
		delete(b.entries, ip)
	}
}

// beginReconcile forgets the event marks, so that events from now on win
// over the SCAN that is about to start.
func (b *Blocklist) beginReconcile() {
	b.mu.Lock()
	clear(b.events)
	b.mu.Unlock()
}

func (b *Blocklist) replace(scanned map[netip.Addr]time.Time) {
	next := make(map[netip.Addr]int64, len(scanned))
	for ip, exp := range scanned {
		if exp.IsZero() {
			next[ip] = 0
		} else {
			next[ip] = exp.UnixNano()
		}
	}
	b.mu.Lock()
	for ip := range b.events {
		if exp, ok := b.entries[ip]; ok {
			next[ip] = exp
		} else {
			delete(next, ip)
		}
	}
	b.entries = next
	b.mu.Unlock()
	b.loaded.Store(true)
}

// Syncer keeps a Blocklist in step with Redis: pub/sub events at once, and a
// full reconcile at start, after every (re)subscription and every Interval,
// which also picks up blocks set and deleted by hand with redis-cli.
type Syncer struct {
	Store    *blockset.Reader
	List     *Blocklist
	Interval time.Duration
	Log      *slog.Logger
	// OnReconcile is called after each reconcile with its outcome.
	OnReconcile func(err error)

	sawEpoch bool        // the daemon's epoch key was there at a reconcile
	lost     atomic.Bool // it is gone since: Redis lost its data
}

// StateLost says Redis was found to have lost its data (the daemon's epoch
// key gone) and the blocks already known are enforced until the daemon
// has written them again.
func (s *Syncer) StateLost() bool { return s.lost.Load() }

// Run syncs until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	kick := make(chan struct{}, 1)
	go s.Store.Subscribe(ctx, s.List.apply, func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	s.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		s.reconcile(ctx)
	}
}

func (s *Syncer) reconcile(ctx context.Context) {
	s.List.beginReconcile()
	scanned, err := s.Store.Blocked(ctx)
	var epoch bool
	if err == nil {
		epoch, err = s.Store.HasEpoch(ctx)
	}
	s.lost.Store(err == nil && s.sawEpoch && !epoch)
	switch {
	case err == nil && s.sawEpoch && !epoch:
		// Redis came back empty: what it lost is still enforced, each
		// block to its own end, until the daemon has written them again.
		s.Log.Warn("redis has lost its data (the epoch key is gone); enforcing the blocks already known until authguard writes them again", "known", s.List.Len())
	case err == nil:
		s.sawEpoch = s.sawEpoch || epoch
		s.List.replace(scanned)
	case ctx.Err() == nil:
		s.Log.Warn("reconciling blocks from redis failed; enforcing the blocks already known", "err", err)
	}
	if s.OnReconcile != nil {
		s.OnReconcile(err)
	}
}

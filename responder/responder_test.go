package responder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
)

type fakeStore struct {
	mu       sync.Mutex
	failures int // fail this many calls first
	written  []string
	actions  []string
	clear    map[string]bool
	done     chan struct{}
	tried    chan struct{} // told of each call, when not nil

	down     bool             // fail every call while set
	prepared chan []string    // told the keys of each batch prepared, when not nil
	clock    func() time.Time // when set, age records how old each batch written was
	age      map[string]time.Duration
}

// fakeBatch is a batch as fakeStore prepares it: the requests and when.
type fakeBatch struct {
	reqs []Request
	now  time.Time
}

func (f *fakeStore) Prepare(reqs []Request, now time.Time) Batch {
	if f.prepared != nil {
		var keys []string
		for _, r := range reqs {
			keys = append(keys, r.Decision.Key)
		}
		select {
		case f.prepared <- keys:
		default:
		}
	}
	return fakeBatch{reqs, now}
}

func (f *fakeStore) Send(_ context.Context, b Batch) ([]Result, error) {
	reqs := b.(fakeBatch).reqs
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tried != nil {
		select {
		case f.tried <- struct{}{}:
		default:
		}
	}
	if f.down {
		return nil, errors.New("redis: connection refused")
	}
	if f.failures > 0 {
		f.failures--
		return nil, errors.New("redis: connection refused")
	}
	if f.clock != nil {
		for _, r := range reqs {
			f.age[r.Decision.Key] = f.clock().Sub(b.(fakeBatch).now)
		}
	}
	out := make([]Result, len(reqs))
	for i, r := range reqs {
		f.actions = append(f.actions, r.Decision.Key+" "+r.Action)
		switch {
		case r.Do == DoBlock && f.clear[r.Decision.Key]:
			out[i].Outcome = Cleared
		case r.Do == DoBlock:
			f.written = append(f.written, r.Decision.Key)
		}
		f.done <- struct{}{}
	}
	return out, nil
}

type fakeNotifier struct{ pages chan Action }

func (f *fakeNotifier) Notify(_ context.Context, a Action) error {
	f.pages <- a
	return nil
}

func block(key string, renewal bool) detector.Decision {
	return detector.Decision{Rule: "burst", Key: key, IP: netip.MustParseAddr(key), Kind: detector.KindBlock, TTL: time.Minute, Alert: true, Renewal: renewal}
}

func TestBlocksAreWrittenInOrderThroughAnOutage(t *testing.T) {
	b := &fakeStore{failures: 3, done: make(chan struct{}, 10)}
	n := &fakeNotifier{pages: make(chan Action, 10)}
	r := New(Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	for _, k := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		r.Submit(ctx, block(k, false), detector.Event{}, 0)
	}
	for range 3 {
		<-b.done
	}
	b.mu.Lock()
	got := b.written
	b.mu.Unlock()
	if len(got) != 3 || got[0] != "192.0.2.1" || got[2] != "192.0.2.3" {
		t.Fatalf("written %v", got)
	}
	for range 3 {
		a := <-n.pages
		// The block runs from the decision, not from the write after the
		// outage: less than a minute is left when it is written.
		if left := a.Expires.Sub(a.At); !a.Blocked || left <= 0 || left >= time.Minute {
			t.Errorf("block written with %v left, want under a minute: %+v", left, a)
		}
	}
}

func TestRenewalsAreNotPagedAndClearedOnesComeBack(t *testing.T) {
	b := &fakeStore{clear: map[string]bool{"192.0.2.9": true}, done: make(chan struct{}, 10)}
	n := &fakeNotifier{pages: make(chan Action, 10)}
	r := New(Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	r.Submit(ctx, block("192.0.2.8", true), detector.Event{}, 1)
	r.Submit(ctx, block("192.0.2.9", true), detector.Event{Username: "eve"}, 2)
	<-b.done
	<-b.done
	<-r.ClearedSignal()
	cl := r.TakeCleared()
	if len(cl) != 1 || cl[0].Seq != 2 || cl[0].Event.Username != "eve" {
		t.Fatalf("cleared %+v", cl)
	}
	// A new incident after them is paged; it must be the only page.
	r.Submit(ctx, block("192.0.2.10", false), detector.Event{}, 3)
	if a := <-n.pages; a.Decision.Key != "192.0.2.10" {
		t.Errorf("paged %s: renewals must not be paged", a.Decision.Key)
	}
}

func TestDryRunAndNeverBlockRecordButDoNotBlock(t *testing.T) {
	b := &fakeStore{done: make(chan struct{}, 10)}
	n := &fakeNotifier{pages: make(chan Action, 10)}
	r := New(Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NeverBlock: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	dry := block("192.0.2.1", false)
	dry.DryRun = true
	r.Submit(ctx, dry, detector.Event{}, 1)
	r.Submit(ctx, block("10.1.2.3", false), detector.Event{}, 2)
	for _, want := range []string{"dry-run", "refused"} {
		if a := <-n.pages; a.What != want || a.Blocked {
			t.Errorf("page %+v, want an unblocked %s", a, want)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.written) != 0 || len(b.actions) != 2 {
		t.Errorf("written %v, recorded %v", b.written, b.actions)
	}
}

func TestQueuedDecisionsAreWrittenAtShutdown(t *testing.T) {
	b := &fakeStore{done: make(chan struct{}, 100)}
	r := New(Options{Store: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	// Queue before the workers start, then stop at once: the flush on the
	// way out must still write them.
	for i := range 20 {
		r.Submit(context.Background(), block(fmt.Sprintf("192.0.2.%d", i), false), detector.Event{}, uint64(i))
	}
	cancel()
	r.Start(ctx)()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.written) != 20 {
		t.Errorf("%d of 20 queued decisions written at shutdown", len(b.written))
	}
}

// A batch that Redis refused when the daemon was told to stop is not
// dropped: it is written within the shutdown grace once Redis takes it.
func TestABatchFailingAtShutdownIsStillWritten(t *testing.T) {
	b := &fakeStore{failures: 2, done: make(chan struct{}, 10), tried: make(chan struct{}, 1)}
	r := New(Options{Store: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	r.Submit(ctx, block("192.0.2.7", false), detector.Event{}, 1)
	<-b.tried // the first write failed; the responder waits to retry
	cancel()
	wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.written) != 1 {
		t.Errorf("the batch being retried at shutdown was dropped: written %v", b.written)
	}
}

// A batch prepared while Redis was down, and kept waiting behind the one
// being retried, is prepared again before it is sent: its TTLs are counted
// from when it is written, not from before the outage.
func TestABatchKeptWaitingIsPreparedAgain(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := &fakeStore{down: true, done: make(chan struct{}, 10), tried: make(chan struct{}, 1),
		prepared: make(chan []string, 100), clock: clock, age: map[string]time.Duration{}}
	r := New(Options{Store: b, Now: clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer r.Start(ctx)()
	defer cancel()
	r.Submit(ctx, block("192.0.2.1", false), detector.Event{}, 1)
	<-b.tried // the first batch is being retried
	r.Submit(ctx, block("192.0.2.2", false), detector.Event{}, 2)
	for keys := range b.prepared {
		if len(keys) == 1 && keys[0] == "192.0.2.2" {
			break // the second batch is prepared and waits for the writer
		}
	}
	mu.Lock()
	now = now.Add(30 * time.Second) // the outage lasts
	mu.Unlock()
	b.mu.Lock()
	b.down = false
	b.mu.Unlock()
	<-b.done
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for ip, age := range b.age {
		if age > maxStale {
			t.Errorf("%s was written from a batch prepared %v before: its TTL would outlast the decision", ip, age)
		}
	}
	if len(b.age) != 2 {
		t.Errorf("written %v", b.age)
	}
}

// Addresses that must never be blocked are refused whatever the rules say,
// with no --never-block at all.
func TestAddressesThatMustNeverBeBlockedAreRefused(t *testing.T) {
	b := &fakeStore{done: make(chan struct{}, 20)}
	n := &fakeNotifier{pages: make(chan Action, 20)}
	r := New(Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	never := []string{"0.0.0.0", "::", "127.0.0.1", "127.9.9.9", "::1", "169.254.169.254", "fe80::1", "255.255.255.255", "224.0.0.1", "::ffff:127.0.0.1"}
	for i, ip := range never {
		r.Submit(ctx, block(ip, false), detector.Event{}, uint64(i+1))
	}
	r.Submit(ctx, block("203.0.113.7", false), detector.Event{}, 99)
	for range never {
		if a := <-n.pages; a.What != "refused" || a.Blocked {
			t.Errorf("%s: %+v, want refused", a.Decision.Key, a)
		}
	}
	if a := <-n.pages; a.What != "block" || !a.Blocked {
		t.Errorf("an ordinary address: %+v", a)
	}
}

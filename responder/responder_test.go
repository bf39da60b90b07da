package responder_test

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
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/storetest"
)

// fakeStore is the in-memory store with outages to order, and a record
// of what it was asked.
type fakeStore struct {
	*storetest.Memory
	mu       sync.Mutex
	failures int // fail this many calls first
	written  []string
	actions  []string
	done     chan struct{}
	tried    chan struct{} // told of each call, when not nil
}

func newFakeStore(done int) *fakeStore {
	return &fakeStore{Memory: storetest.NewMemory(), done: make(chan struct{}, done)}
}

func (f *fakeStore) Prepare(reqs []responder.Request) responder.Batch {
	return responder.WriteFunc(f.write).Prepare(reqs)
}

func (f *fakeStore) write(ctx context.Context, reqs []responder.Request) ([]responder.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tried != nil {
		select {
		case f.tried <- struct{}{}:
		default:
		}
	}
	if f.failures > 0 {
		f.failures--
		return nil, errors.New("redis: connection refused")
	}
	out, err := f.Memory.Write(ctx, reqs)
	for i, r := range reqs {
		f.actions = append(f.actions, r.Decision.Key+" "+r.Act.String())
		if r.Act.Blocks() && out[i].Outcome == responder.Written {
			f.written = append(f.written, r.Decision.Key)
		}
		f.done <- struct{}{}
	}
	return out, err
}

type fakeNotifier struct{ pages chan responder.Action }

func (f *fakeNotifier) Notify(_ context.Context, a responder.Action) error {
	f.pages <- a
	return nil
}

func block(key string, renewal bool) detector.Decision {
	return detector.Decision{Rule: "burst", Key: key, Net: blockset.Host(netip.MustParseAddr(key)), Kind: detector.KindBlock, TTL: time.Minute, Alert: true, Renewal: renewal}
}

func TestBlocksAreWrittenInOrderThroughAnOutage(t *testing.T) {
	b := newFakeStore(10)
	b.failures = 3
	n := &fakeNotifier{pages: make(chan responder.Action, 10)}
	r := responder.New(responder.Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		if left := a.Expires.Sub(a.At); !a.Blocked() || left <= 0 || left >= time.Minute {
			t.Errorf("block written with %v left, want under a minute: %+v", left, a)
		}
	}
}

func TestRenewalsAreNotPagedAndClearedOnesComeBack(t *testing.T) {
	b := newFakeStore(10)
	// Both were blocked; an operator has since cleared the second.
	now := time.Now()
	b.Memory.Write(context.Background(), []responder.Request{
		storetest.Request("192.0.2.8", responder.ActBlock, "8", now, time.Minute),
		storetest.Request("192.0.2.9", responder.ActBlock, "9", now, time.Minute)})
	b.Clear(netip.MustParseAddr("192.0.2.9"))
	n := &fakeNotifier{pages: make(chan responder.Action, 10)}
	cleared := make(chan detector.Reset, 10)
	r := responder.New(responder.Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Cleared: func(r detector.Reset) { cleared <- r }})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	r.Submit(ctx, block("192.0.2.8", true), detector.Event{}, 1)
	r.Submit(ctx, block("192.0.2.9", true), detector.Event{Username: "eve"}, 2)
	<-b.done
	<-b.done
	if c := <-cleared; c.IP.String() != "192.0.2.9" || c.Seq != 2 || c.Again == nil || c.Again.Username != "eve" {
		t.Fatalf("cleared %+v", c)
	}
	// A new incident after them is paged; it must be the only page.
	r.Submit(ctx, block("192.0.2.10", false), detector.Event{}, 3)
	if a := <-n.pages; a.Decision.Key != "192.0.2.10" {
		t.Errorf("paged %s: renewals must not be paged", a.Decision.Key)
	}
	select {
	case c := <-cleared:
		t.Errorf("%s reported cleared, but only 192.0.2.9 was", c.IP)
	default:
	}
}

func TestDryRunAndNeverBlockRecordButDoNotBlock(t *testing.T) {
	b := newFakeStore(10)
	n := &fakeNotifier{pages: make(chan responder.Action, 10)}
	r := responder.New(responder.Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NeverBlock: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	dry := block("192.0.2.1", false)
	dry.DryRun = true
	r.Submit(ctx, dry, detector.Event{}, 1)
	r.Submit(ctx, block("10.1.2.3", false), detector.Event{}, 2)
	for _, want := range []responder.Act{responder.ActDryRun, responder.ActRefuse} {
		if a := <-n.pages; a.Act != want || a.Blocked() {
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
	b := newFakeStore(100)
	r := responder.New(responder.Options{Store: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
	b := newFakeStore(10)
	b.failures, b.tried = 2, make(chan struct{}, 1)
	r := responder.New(responder.Options{Store: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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

// Addresses that must never be blocked are refused whatever the rules say,
// with no --never-block at all.
func TestAddressesThatMustNeverBeBlockedAreRefused(t *testing.T) {
	b := newFakeStore(20)
	n := &fakeNotifier{pages: make(chan responder.Action, 20)}
	r := responder.New(responder.Options{Store: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	wait := r.Start(ctx)
	defer func() { cancel(); wait() }()
	never := []string{"0.0.0.0", "::", "127.0.0.1", "127.9.9.9", "::1", "169.254.169.254", "fe80::1", "255.255.255.255", "224.0.0.1", "::ffff:127.0.0.1"}
	for i, ip := range never {
		r.Submit(ctx, block(ip, false), detector.Event{}, uint64(i+1))
	}
	r.Submit(ctx, block("203.0.113.7", false), detector.Event{}, 99)
	for range never {
		if a := <-n.pages; a.Act != responder.ActRefuse || a.Blocked() {
			t.Errorf("%s: %+v, want refused", a.Decision.Key, a)
		}
	}
	if a := <-n.pages; a.Act != responder.ActBlock || !a.Blocked() {
		t.Errorf("an ordinary address: %+v", a)
	}
}

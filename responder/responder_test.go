package responder

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
)

type fakeBlocker struct {
	mu       sync.Mutex
	failures int // fail this many calls first
	written  []string
	clear    map[string]bool
	done     chan struct{}
}

func (f *fakeBlocker) Block(_ context.Context, d detector.Decision, _ time.Time) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return false, errors.New("redis: connection refused")
	}
	defer func() { f.done <- struct{}{} }()
	if f.clear[d.Key] {
		return false, nil
	}
	f.written = append(f.written, d.Key)
	return true, nil
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
	b := &fakeBlocker{failures: 3, done: make(chan struct{}, 10)}
	n := &fakeNotifier{pages: make(chan Action, 10)}
	r := New(Options{Blocker: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		if !a.Blocked || a.Expires.Sub(a.At) != time.Minute {
			t.Errorf("page for %+v", a)
		}
	}
}

func TestRenewalsAreNotPagedAndClearedOnesComeBack(t *testing.T) {
	b := &fakeBlocker{clear: map[string]bool{"192.0.2.9": true}, done: make(chan struct{}, 10)}
	n := &fakeNotifier{pages: make(chan Action, 10)}
	r := New(Options{Blocker: b, Notifier: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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

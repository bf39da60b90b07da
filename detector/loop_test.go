package detector

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// decided records what a loop decided, as "key count seq".
type decided []string

func (d *decided) decide(_ context.Context, dec Decision, _ Event, seq uint64) error {
	*d = append(*d, fmt.Sprintf("%s %d %d", dec.Key, dec.Count, seq))
	return nil
}

func burst(l *Loop, ip string, from time.Duration, n int) {
	for i := range n {
		l.Observe(context.Background(), failed(ip, from+time.Duration(i)))
	}
}

func TestTheLoopNumbersDecisionsInOrder(t *testing.T) {
	var got decided
	l := NewLoop(mustEngine(t, Config{Rules: []Rule{sec010()}}), got.decide)
	burst(l, "203.0.113.7", 0, 6)
	burst(l, "198.51.100.1", time.Second, 5)
	want := decided{"203.0.113.7 5 1", "203.0.113.7 6 2", "198.51.100.1 5 3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decided %v, want %v", got, want)
	}
}

// An operator's unblock gives the address a clean slate at once; the
// clearance of a renewal found by the store resets it once however many
// decisions about it were in flight, and counts each one's event again.
func TestResetsGiveACleanSlateOnce(t *testing.T) {
	var got decided
	l := NewLoop(mustEngine(t, Config{Rules: []Rule{sec010()}}), got.decide)
	events := make(chan Event)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, events, nil) }()
	for i := range 7 { // a block (seq 1) and two renewals (2, 3)
		events <- failed("203.0.113.7", time.Duration(i))
	}
	// The store found both renewals cleared: one reset, then both events
	// count again, on a fresh window.
	l.Reset(Reset{IP: failed("203.0.113.7", 0).IP, Seq: 2, Again: ptr(failed("203.0.113.7", 5))})
	l.Reset(Reset{IP: failed("203.0.113.7", 0).IP, Seq: 3, Again: ptr(failed("203.0.113.7", 6))})
	for i := range 3 { // 2 + 3 = 5: blocked again
		events <- failed("203.0.113.7", time.Duration(7+i))
	}
	l.Reset(Reset{IP: failed("203.0.113.7", 0).IP}) // an operator's unblock
	for i := range 4 {
		events <- failed("203.0.113.7", time.Duration(10+i))
	}
	close(events)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := decided{"203.0.113.7 5 1", "203.0.113.7 6 2", "203.0.113.7 7 3", "203.0.113.7 5 4"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decided %v, want %v", got, want)
	}
}

func ptr(ev Event) *Event { return &ev }

func TestResetsWaitingAreBounded(t *testing.T) {
	l := NewLoop(mustEngine(t, Config{Rules: []Rule{sec010()}}), (&decided{}).decide)
	for i := range maxPendingResets {
		if !l.Reset(Reset{IP: failed(fmt.Sprintf("10.0.%d.%d", i/256, i%256), 0).IP}) {
			t.Fatalf("reset %d refused", i)
		}
	}
	if l.Reset(Reset{IP: failed("203.0.113.7", 0).IP}) {
		t.Error("a reset beyond the bound was taken")
	}
}

func TestADecisionErrorStopsTheLoop(t *testing.T) {
	stop := errors.New("queue closed")
	l := NewLoop(mustEngine(t, Config{Rules: []Rule{sec010()}}), func(context.Context, Decision, Event, uint64) error { return stop })
	events := make(chan Event, 5)
	for i := range 5 {
		events <- failed("203.0.113.7", time.Duration(i))
	}
	if err := l.Run(context.Background(), events, nil); !errors.Is(err, stop) {
		t.Errorf("run returned %v, want the decision's error", err)
	}
}

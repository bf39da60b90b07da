package detector

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// Reset is the one way back into the detector: an address whose windows
// start again, because an operator unblocked it, or because the store found
// a renewal's block cleared (the runbook's DEL of both keys).
type Reset struct {
	IP netip.Addr
	// Seq is the sequence number of the decision the store found cleared;
	// decisions made before the address was last reset do not reset it
	// again, so that several in flight about one clearance reset it once.
	// 0 for an operator's unblock, which resets at once.
	Seq uint64
	// Again, when set, is counted after the reset: the event that
	// triggered the cleared decision is the first of the clean slate.
	Again *Event
}

// Loop owns an Engine and is the single goroutine that feeds it: events and
// resets in, decisions out to Decide in order, each with a sequence
// number. The daemon runs it on the clock; a replay runs it on each event's
// own time. Its methods other than Reset are for that goroutine only.
type Loop struct {
	// Engine is the engine fed; Swap replaces it.
	Engine *Engine
	// Decide receives each decision, the event that triggered it and its
	// sequence number; an error stops the loop.
	Decide func(ctx context.Context, d Decision, ev Event, seq uint64) error
	// Clock is the time events are counted at; nil counts each at its own
	// time (a replay of a sorted log).
	Clock func() time.Time
	// Observed, when set, is told of each event counted and whether it was
	// stamped ahead of the clock.
	Observed func(ev Event, future bool)

	seq     uint64
	resetAt map[netip.Addr]uint64
	ds      []Decision

	mu      sync.Mutex
	pending []Reset
	signal  chan struct{}
}

// maxPendingResets bounds the resets waiting for the loop; a reset dropped
// beyond it costs nothing lasting: the next renewal finds the address
// cleared and resets it again.
const maxPendingResets = 1 << 16

// NewLoop returns a loop over e handing decisions to decide.
func NewLoop(e *Engine, decide func(ctx context.Context, d Decision, ev Event, seq uint64) error) *Loop {
	return &Loop{Engine: e, Decide: decide, resetAt: map[netip.Addr]uint64{}, signal: make(chan struct{}, 1)}
}

// Reset queues r for the loop; it is safe from any goroutine and never
// waits. It is false when too many resets are already waiting.
func (l *Loop) Reset(r Reset) bool {
	l.mu.Lock()
	ok := len(l.pending) < maxPendingResets
	if ok {
		l.pending = append(l.pending, r)
	}
	l.mu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
	return ok
}

// Observe counts one event and hands its decisions on.
func (l *Loop) Observe(ctx context.Context, ev Event) error {
	now := ev.Time
	if l.Clock != nil {
		now = l.Clock()
	}
	before := l.Engine.Future()
	l.ds = l.Engine.Observe(ev, now, l.ds[:0])
	if l.Observed != nil {
		l.Observed(ev, l.Engine.Future() != before)
	}
	for _, d := range l.ds {
		l.seq++
		if err := l.Decide(ctx, d, ev, l.seq); err != nil {
			return err
		}
	}
	return nil
}

// Swap replaces the engine (a reload: see Engine.Reload).
func (l *Loop) Swap(e *Engine) { l.Engine = e }

// Run feeds the engine until ctx ends or events is closed (nil then),
// running each of tasks between events on the loop's goroutine. A reset
// queued before an event arrives is applied before it is counted.
func (l *Loop) Run(ctx context.Context, events <-chan Event, tasks <-chan func()) error {
	for {
		select {
		case <-l.signal:
			if err := l.applyResets(ctx); err != nil {
				return err
			}
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return l.applyResets(ctx)
			}
			if err := l.Observe(ctx, ev); err != nil {
				return err
			}
		case <-l.signal:
			if err := l.applyResets(ctx); err != nil {
				return err
			}
		case task := <-tasks:
			task()
		}
	}
}

// Drain counts the events already waiting in events, without waiting for
// more, once Run has stopped: what a source handed over before a shutdown
// is decided too. It returns how many it counted.
func (l *Loop) Drain(ctx context.Context, events <-chan Event) (int, error) {
	if err := l.applyResets(ctx); err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		select {
		case ev, ok := <-events:
			if !ok {
				return n, nil
			}
			if err := l.Observe(ctx, ev); err != nil {
				return n, err
			}
		default:
			return n, nil
		}
	}
}

func (l *Loop) applyResets(ctx context.Context) error {
	l.mu.Lock()
	rs := l.pending
	l.pending = nil
	l.mu.Unlock()
	for _, r := range rs {
		if at, ok := l.resetAt[r.IP]; r.Seq == 0 || !ok || r.Seq > at {
			l.Engine.Reset(r.IP)
			l.resetAt[r.IP] = l.seq
		}
		if r.Again != nil {
			if err := l.Observe(ctx, *r.Again); err != nil {
				return err
			}
		}
	}
	if len(l.resetAt) > 10000 {
		clear(l.resetAt) // bounded; only decisions in flight need it
	}
	return nil
}

// Package responder acts on the detector's decisions: it writes blocks
// through a Blocker, pages through a Notifier and leaves an evidence record of
// every action in the log. Outages of either are retried with backoff from
// bounded queues; a full block queue holds the detector back rather than
// losing a decision.
package responder

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
)

// Blocker writes blocks. Block returns false when it deliberately wrote
// nothing because an operator had cleared the IP (see redisblock).
type Blocker interface {
	Block(ctx context.Context, d detector.Decision, now time.Time) (bool, error)
}

// Notifier pages people about an action.
type Notifier interface {
	Notify(ctx context.Context, a Action) error
}

// Action is what was done about one decision: what evidence records and
// pages show.
type Action struct {
	Decision detector.Decision
	// At is the wall-clock time the action was taken.
	At time.Time
	// Blocked says a block was written; Expires is then its end.
	Blocked bool
	Expires time.Time
}

// Cleared is a decision that was not carried out because an operator had
// unblocked its IP; the detector must reset the IP and count Event again.
type Cleared struct {
	Decision detector.Decision
	Event    detector.Event
	// Seq is the sequence number given to Submit.
	Seq uint64
}

// Options configure a Responder.
type Options struct {
	Blocker  Blocker  // nil: no blocking (alerts only)
	Notifier Notifier // nil: no pages
	Log      *slog.Logger
	Registry prometheus.Registerer
	// BlockQueue and NotifyQueue bound the queues (defaults 10000 and 1000).
	BlockQueue, NotifyQueue int
	// Now is the wall clock; time.Now when nil.
	Now func() time.Time
}

// Responder carries out decisions in order.
type Responder struct {
	opts    Options
	blocks  chan item
	notify  chan Action
	metrics metrics

	mu      sync.Mutex
	cleared []Cleared
	signal  chan struct{}
}

type item struct {
	d   detector.Decision
	ev  detector.Event
	seq uint64
}

type metrics struct {
	decisions     *prometheus.CounterVec
	blocks        prometheus.Counter
	blockErrors   prometheus.Counter
	cleared       prometheus.Counter
	queue         prometheus.Gauge
	notifications prometheus.Counter
	notifyErrors  prometheus.Counter
	notifyDropped prometheus.Counter
}

// New returns a responder; Start runs it.
func New(opts Options) *Responder {
	if opts.BlockQueue <= 0 {
		opts.BlockQueue = 10000
	}
	if opts.NotifyQueue <= 0 {
		opts.NotifyQueue = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	r := &Responder{opts: opts, blocks: make(chan item, opts.BlockQueue), notify: make(chan Action, opts.NotifyQueue), signal: make(chan struct{}, 1)}
	r.metrics = metrics{
		decisions:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_decisions_total", Help: "Decisions made by the detector, by rule and kind."}, []string{"rule", "kind"}),
		blocks:        prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_blocks_written_total", Help: "Blocks written to Redis."}),
		blockErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_block_errors_total", Help: "Failed attempts to write a block (each is retried)."}),
		cleared:       prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_blocks_cleared_total", Help: "Renewals not written because an operator had cleared the IP."}),
		queue:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_block_queue_length", Help: "Decisions waiting to be written to Redis."}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_notifications_total", Help: "Pages sent."}),
		notifyErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_notification_errors_total", Help: "Failed attempts to send a page (each is retried)."}),
		notifyDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_notifications_dropped_total", Help: "Pages dropped because the page queue was full."}),
	}
	m := r.metrics
	opts.Registry.MustRegister(m.decisions, m.blocks, m.blockErrors, m.cleared, m.queue, m.notifications, m.notifyErrors, m.notifyDropped)
	return r
}

// Start runs the workers until ctx ends; the returned function waits for them.
func (r *Responder) Start(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.runBlocks(ctx) }()
	go func() { defer wg.Done(); r.runNotify(ctx) }()
	return wg.Wait
}

// Submit queues a decision and the event that triggered it. It blocks while
// the block queue is full (a Redis outage), holding the detector back rather
// than dropping a decision.
func (r *Responder) Submit(ctx context.Context, d detector.Decision, ev detector.Event, seq uint64) error {
	r.metrics.decisions.WithLabelValues(d.Rule, string(d.Kind)).Inc()
	it := item{d, ev, seq}
	select {
	case r.blocks <- it:
		r.metrics.queue.Set(float64(len(r.blocks)))
		return nil
	default:
	}
	r.opts.Log.Error("block queue full: detection is held back until Redis accepts writes again", "queued", cap(r.blocks))
	select {
	case r.blocks <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ClearedSignal is ready when TakeCleared has something to return.
func (r *Responder) ClearedSignal() <-chan struct{} { return r.signal }

// TakeCleared returns and forgets the decisions cleared since the last call.
func (r *Responder) TakeCleared() []Cleared {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cleared
	r.cleared = nil
	return c
}

func (r *Responder) runBlocks(ctx context.Context) {
	for {
		var it item
		select {
		case <-ctx.Done():
			return
		case it = <-r.blocks:
			r.metrics.queue.Set(float64(len(r.blocks)))
		}
		a := Action{Decision: it.d, At: r.opts.Now()}
		if it.d.Kind == detector.KindBlock && r.opts.Blocker != nil {
			written, ok := r.block(ctx, it.d)
			if !ok {
				return
			}
			if !written {
				r.metrics.cleared.Inc()
				r.opts.Log.Info("operator had cleared the IP; giving it a clean slate", "ip", it.d.Key, "rule", it.d.Rule)
				r.mu.Lock()
				r.cleared = append(r.cleared, Cleared{it.d, it.ev, it.seq})
				r.mu.Unlock()
				select {
				case r.signal <- struct{}{}:
				default:
				}
				continue
			}
			a.At = r.opts.Now()
			a.Blocked = true
			a.Expires = a.At.Add(it.d.TTL)
		}
		r.evidence(a)
		if it.d.Alert && !it.d.Renewal && r.opts.Notifier != nil {
			select {
			case r.notify <- a:
			default:
				r.metrics.notifyDropped.Inc()
				r.opts.Log.Error("page queue full: page dropped", "rule", it.d.Rule, "key", it.d.Key)
			}
		}
	}
}

// block writes one block, retrying with backoff until it succeeds or ctx ends.
func (r *Responder) block(ctx context.Context, d detector.Decision) (written, ok bool) {
	for attempt := 0; ; attempt++ {
		written, err := r.opts.Blocker.Block(ctx, d, r.opts.Now())
		if err == nil {
			if written {
				r.metrics.blocks.Inc()
			}
			return written, true
		}
		r.metrics.blockErrors.Inc()
		wait := Backoff(attempt, 100*time.Millisecond, 5*time.Second)
		r.opts.Log.Warn("writing block failed; retrying", "ip", d.Key, "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			r.opts.Log.Error("shutting down with a block not written", "ip", d.Key, "rule", d.Rule)
			return false, false
		case <-time.After(wait):
		}
	}
}

func (r *Responder) runNotify(ctx context.Context) {
	for {
		var a Action
		select {
		case <-ctx.Done():
			return
		case a = <-r.notify:
		}
		for attempt := 0; ; attempt++ {
			err := r.opts.Notifier.Notify(ctx, a)
			if err == nil {
				r.metrics.notifications.Inc()
				break
			}
			r.metrics.notifyErrors.Inc()
			wait := Backoff(attempt, time.Second, time.Minute)
			if ra, ok := err.(interface{ RetryAfter() time.Duration }); ok && ra.RetryAfter() > 0 {
				wait = ra.RetryAfter()
			}
			r.opts.Log.Warn("sending page failed; retrying", "rule", a.Decision.Rule, "key", a.Decision.Key, "err", err, "retry_in", wait.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// evidence writes the runbook's record of an action: UTC time, IP, trigger,
// action, TTL and expiry.
func (r *Responder) evidence(a Action) {
	d := a.Decision
	attrs := []any{"time", a.At.UTC().Format(time.RFC3339), "rule", d.Rule, "key", d.Key,
		"trigger", d.Trigger(), "severity", d.Severity, "count", d.Count,
		"first_seen", d.FirstSeen.Format(time.RFC3339), "last_seen", d.LastSeen.Format(time.RFC3339)}
	action := "alert"
	if a.Blocked {
		action = "block"
		if d.Renewal {
			action = "block renewed"
		}
		attrs = append(attrs, "ttl_seconds", int(d.TTL.Seconds()), "expires", a.Expires.UTC().Format(time.RFC3339))
	}
	r.opts.Log.Info("evidence", append([]any{"action", action}, attrs...)...)
}

// Backoff is full-jitter exponential backoff between base and ceiling.
func Backoff(attempt int, base, ceiling time.Duration) time.Duration {
	d := base << min(attempt, 20)
	if d > ceiling || d <= 0 {
		d = ceiling
	}
	return d/2 + rand.N(d/2+1)
}

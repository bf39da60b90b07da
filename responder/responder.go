// Package responder acts on the detector's decisions: it writes blocks
// through a Blocker, pages through a Notifier and leaves an evidence record of
// every action in the log. Outages of either are retried with backoff from
// bounded queues; a full block queue holds the detector back rather than
// losing a decision.
package responder

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
)

// Store carries decisions out: it writes blocks and evidence records.
type Store interface {
	// Prepare readies reqs to be written, doing no I/O: the responder
	// readies the next batch while the store writes the last, so that the
	// daemon's work and the store's overlap.
	Prepare(reqs []Request) Batch
}

// Batch is a batch of requests a Store readied.
type Batch interface {
	// Write carries out the batch's requests in order, in as few round
	// trips as it can, and says what became of each. A block runs from its
	// DecidedAt: it is written with what is left of its TTL when Write
	// runs, and one that would already have ended is only recorded
	// (Expired). Write may be called again after an error; writing a
	// request again has no further effect (AlreadyWritten).
	Write(ctx context.Context) ([]Result, error)
}

// WriteFunc is a Store that readies nothing ahead: a batch is written by
// calling the function with its requests.
type WriteFunc func(ctx context.Context, reqs []Request) ([]Result, error)

// Prepare implements Store.
func (f WriteFunc) Prepare(reqs []Request) Batch { return writeLater{f, reqs} }

type writeLater struct {
	write WriteFunc
	reqs  []Request
}

func (w writeLater) Write(ctx context.Context) ([]Result, error) { return w.write(ctx, w.reqs) }

// Notifier pages people about an action. Notify queues the page and
// never waits: the notifier's own pipeline coalesces, sends and retries.
type Notifier interface {
	Notify(ctx context.Context, a Action) error
}

// Act is what the responder does about a decision.
type Act int

// Acts.
const (
	// ActAlert records and pages; nothing is blocked.
	ActAlert Act = iota
	// ActBlock writes a block.
	ActBlock
	// ActRenew writes the renewal of a block.
	ActRenew
	// ActDryRun records a block that is not written (the rule's dry_run,
	// or --dry-run).
	ActDryRun
	// ActRefuse records a block refused because the address is never
	// blocked.
	ActRefuse
	// ActExpire records a block that would already have ended when it
	// could be written.
	ActExpire
	// ActRestore writes again a standing block Redis lost.
	ActRestore
	// ActProtect writes an account's protection (account_protect:<user>).
	ActProtect
)

var actNames = [...]string{ActAlert: "alert", ActBlock: "block", ActRenew: "block renewed",
	ActDryRun: "dry-run", ActRefuse: "refused", ActExpire: "expired before it could be written", ActRestore: "block restored", ActProtect: "account protected"}

// String is the act as the evidence spells it.
func (a Act) String() string {
	if a < 0 || int(a) >= len(actNames) {
		return "unknown"
	}
	return actNames[a]
}

// Blocks says the act writes a block.
func (a Act) Blocks() bool { return a == ActBlock || a == ActRenew || a == ActRestore }

// Request is one decision for the Store.
type Request struct {
	Decision detector.Decision
	Act      Act
	// ID identifies the request across retries.
	ID string
	// DecidedAt is when the decision was made: a block ends at DecidedAt +
	// TTL however late it is written (after a Redis outage, say).
	DecidedAt time.Time
}

// Outcome of a Request.
type Outcome int

// Outcomes.
const (
	// Written: done now.
	Written Outcome = iota
	// Cleared: a renewal not written because an operator had cleared the IP.
	Cleared
	// Expired: the block would already have ended; only evidence was written.
	Expired
	// AlreadyWritten: the same decision was carried out before (by this
	// process before a retry, or by an earlier run before a restart).
	AlreadyWritten
)

var outcomeNames = [...]string{Written: "written", Cleared: "cleared", Expired: "expired", AlreadyWritten: "already written"}

func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeNames) {
		return "unknown"
	}
	return outcomeNames[o]
}

// Result says what became of a Request.
type Result struct {
	Outcome  Outcome
	Incident string
}

// Action is what was done about one decision: what evidence records and
// pages show.
type Action struct {
	Decision detector.Decision
	// At is the wall-clock time the action was taken.
	At time.Time
	// Act is what was done; when it blocks, the block was written and
	// Expires is its end.
	Act     Act
	Expires time.Time
	// Incident is the incident the action belongs to, when the store keeps
	// one.
	Incident string
}

// Blocked says a block was written.
func (a Action) Blocked() bool { return a.Act.Blocks() }

// Options configure a Responder.
type Options struct {
	Store    Store    // nil: nothing is written (alerts only)
	Notifier Notifier // nil: no pages
	// DryRun records and pages every decision but writes no block.
	DryRun bool
	// ShutdownGrace bounds how long queued decisions are still written
	// after the context ends (default 10s).
	ShutdownGrace time.Duration
	// NeverBlock lists networks never blocked whatever the rules say (the
	// gateways' own proxies, say); such decisions are recorded as refused.
	NeverBlock []netip.Prefix
	// Cleared is told of each renewal not written because an operator had
	// cleared its address: the detector must start the address again and
	// count the event again (nil: not told).
	Cleared func(detector.Reset)
	// RunID makes request IDs unique to this process.
	RunID    string
	Log      *slog.Logger
	Registry prometheus.Registerer
	// BlockQueue bounds the decisions waiting to be written (default
	// 10000).
	BlockQueue int
	// Now is the wall clock; time.Now when nil.
	Now func() time.Time
}

// Responder carries out decisions in order.
type Responder struct {
	opts    Options
	blocks  chan item
	metrics metrics

	submitted atomic.Uint64
	progress  progress
}

// progress counts the decisions finished (written, or found done before)
// and tells waiters each time it moves.
type progress struct {
	mu    sync.Mutex
	n     uint64
	moved chan struct{}
}

func (p *progress) add(n uint64) {
	p.mu.Lock()
	p.n += n
	moved := p.moved
	p.moved = nil
	p.mu.Unlock()
	if moved != nil {
		close(moved)
	}
}

// await waits until n decisions are finished or ctx ends.
func (p *progress) await(ctx context.Context, n uint64) error {
	for {
		p.mu.Lock()
		if p.n >= n {
			p.mu.Unlock()
			return nil
		}
		if p.moved == nil {
			p.moved = make(chan struct{})
		}
		moved := p.moved
		p.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Flush waits until every decision submitted before it was called is
// carried out (or ctx ends).
func (r *Responder) Flush(ctx context.Context) error {
	return r.progress.await(ctx, r.submitted.Load())
}

// maxBatch bounds how many queued decisions go to the store in one round
// trip: under load, few round trips, each about 10 ms of Redis time.
const maxBatch = 512

type item struct {
	d         detector.Decision
	ev        detector.Event
	seq       uint64
	decidedAt time.Time
}

type metrics struct {
	decisions     *prometheus.CounterVec
	blocks        prometheus.Counter
	blockErrors   prometheus.Counter
	cleared       prometheus.Counter
	refused       prometheus.Counter
	restored      prometheus.Counter
	protected     prometheus.Counter
	eventToBlock  prometheus.Histogram
	repeated      prometheus.Counter
	unwritten     prometheus.Counter
	queue         prometheus.Gauge
	notifications prometheus.Counter
	notifyErrors  prometheus.Counter
}

// New returns a responder; Start runs it.
func New(opts Options) *Responder {
	if opts.BlockQueue <= 0 {
		opts.BlockQueue = 10000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	r := &Responder{opts: opts, blocks: make(chan item, opts.BlockQueue)}
	r.metrics = metrics{
		decisions:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_decisions_total", Help: "Decisions made by the detector, by rule and kind."}, []string{"rule", "kind"}),
		blocks:      prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_blocks_written_total", Help: "Blocks written to Redis."}),
		blockErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_block_errors_total", Help: "Failed attempts to write a block (each is retried)."}),
		cleared:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_blocks_cleared_total", Help: "Renewals not written because an operator had cleared the IP."}),
		repeated:    prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_decisions_already_done_total", Help: "Decisions found already carried out (re-decided after a restart, or retried after a lost reply)."}),
		unwritten:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_decisions_unwritten_total", Help: "Decisions still queued when the shutdown grace ran out."}),
		refused:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_blocks_refused_total", Help: "Blocks not written because the address is never blocked (--never-block, or unspecified, loopback, link-local, broadcast or multicast)."}),
		restored:    prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_blocks_restored_total", Help: "Standing blocks written again after Redis lost its data."}),
		eventToBlock: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authguard_event_to_block_seconds",
			Help:    "From a failed login's entry time to its block written in Redis, for events read live (catch-up and backfill left out): the figure authguard promises under 2 s.",
			Buckets: []float64{.05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30, 60}}),
		protected:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_accounts_protected_total", Help: "Account protections written to Redis (account_protect:<user>), renewals included."}),
		queue:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_block_queue_length", Help: "Decisions waiting to be written to Redis."}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_notifications_total", Help: "Pages handed to the notifier."}),
		notifyErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_notification_errors_total", Help: "Pages the notifier would not take (it logs why)."}),
	}
	m := r.metrics
	opts.Registry.MustRegister(m.decisions, m.blocks, m.blockErrors, m.cleared, m.refused, m.restored, m.protected, m.eventToBlock, m.repeated, m.unwritten, m.queue, m.notifications, m.notifyErrors)
	return r
}

// Start runs the workers until ctx ends; the returned function waits for them.
func (r *Responder) Start(ctx context.Context) (wait func()) {
	done := make(chan struct{})
	go func() { defer close(done); r.runBlocks(ctx) }()
	return func() { <-done }
}

// Submit queues a decision and the event that triggered it. It blocks while
// the block queue is full (a Redis outage), holding the detector back rather
// than dropping a decision.
func (r *Responder) Submit(ctx context.Context, d detector.Decision, ev detector.Event, seq uint64) error {
	r.metrics.decisions.WithLabelValues(d.Rule, string(d.Kind)).Inc()
	r.submitted.Add(1)
	decided := r.opts.Now()
	if ev.CatchUp && d.Time.Before(decided) {
		decided = d.Time // decided late about the past: it dates from then
	}
	it := item{d, ev, seq, decided}
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
		r.submitted.Add(^uint64(0)) // not submitted after all
		return ctx.Err()
	}
}

// NeverBlocked says why target (an address or a network) must never be
// blocked whatever a rule or an operator says ("" when it may be): blocking
// it would lock out the machine itself, every client at once or a whole
// link, or it is in or overlaps also (the --never-block networks: the
// gateways' own proxies). A network is refused when any address in it is.
func NeverBlocked(target netip.Prefix, also []netip.Prefix) string {
	if !target.IsValid() {
		return ""
	}
	if target.Addr().Is4In6() && target.Bits() >= 96 {
		target = netip.PrefixFrom(target.Addr().Unmap(), target.Bits()-96)
	}
	if slices.ContainsFunc(also, target.Overlaps) {
		return "in --never-block"
	}
	for _, n := range specialNets {
		if n.net.Overlaps(target) {
			return n.why
		}
	}
	return ""
}

var specialNets = []struct {
	net netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/32"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

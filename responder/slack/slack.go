// Package slack pages the on-call team about authguard's incidents. In
// bot-token mode each incident is one message (chat.postMessage), updated in
// place as it escalates (chat.update), with thread replies for escalations,
// unblocks and extensions, and Unblock / Extend buttons served by
// Interactions. Bursts of incidents of one rule are coalesced into one
// summary. An incoming webhook is the fallback (every page a new post);
// with neither, pages are written to a terminal so that a demo or a dry run
// shows what Slack would get.
//
// Pages travel a small pipeline: a bounded queue, a coalescing window,
// then sends that honour Slack's Retry-After and retry server errors with
// backoff. Slack being slow or down never holds up detection or blocking.
package slack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/responder"
)

// Options configure the notifier.
type Options struct {
	// Transport carries the pages: Bot, Webhook or Terminal.
	Transport Transport
	// Channel is where a bot posts (Routes aside).
	Channel string

	// Routes sends pages of a severity ("P1") to another channel than
	// Channel (bot-token mode).
	Routes map[string]string
	// Mentions puts text such as "<!here>" before new pages of a severity.
	Mentions map[string]string
	// Coalesce is how long pages wait for others to join them (default 2s;
	// negative: no waiting). CoalesceMin or more new incidents of one rule
	// in one window (default 3) become one summary, which later incidents
	// of the rule join while it was updated within StormHold (default 1m).
	Coalesce    time.Duration
	CoalesceMin int
	StormHold   time.Duration
	// Queue bounds the pages waiting to be sent (default 1000); beyond it
	// pages are dropped, counted and logged.
	Queue int
	// Buttons adds Unblock and Extend buttons to pages about blocks; set it
	// when Interactions is served.
	Buttons bool
	// MaskUsernames hides usernames in the sample lines.
	MaskUsernames bool
	// Explore links each incident's lines in Grafana Explore.
	Explore *Explore
	// Attempts, when set, draws each incident's attempts per minute (from
	// Loki) on its page.
	Attempts Attempts
	// Messages, when set, keeps where pages are across restarts.
	Messages Messages
	// RetryBase and RetryMax bound the backoff between failed sends
	// (defaults 1s and 1m); a 429's Retry-After wins over them.
	RetryBase, RetryMax time.Duration
	// Remember bounds the incidents whose messages are kept for updates
	// (default 10,000; the oldest are forgotten first).
	Remember int
	// Refresh is how often open incidents' pages are redrawn with their
	// attempts per minute when more attempts came (default 1m; negative:
	// never). Each round redraws at most refreshPerRound pages.
	Refresh time.Duration

	Log      *slog.Logger
	Registry prometheus.Registerer
	// Now is the wall clock (time.Now when nil): when blocks end, the
	// times shown on pages.
	Now func() time.Time
}

// Messages keeps where each incident's page is beyond this process, so
// that after a restart an escalation updates the page instead of posting
// another. The daemon keeps them with the block in Redis.
type Messages interface {
	SaveMessage(ctx context.Context, target netip.Prefix, incident, channel, ts string) error
	LoadMessage(ctx context.Context, target netip.Prefix, incident string) (channel, ts string, err error)
}

// Attempts counts an incident's attempts per minute: key is the address
// ("" for all clients), from and to bound the incident.
type Attempts interface {
	AttemptsPerMinute(ctx context.Context, key string, from, to time.Time) ([]int, error)
}

// attemptsTimeout bounds the wait for an incident's attempts per minute;
// without them the page goes out without its sparkline.
const attemptsTimeout = 2 * time.Second

// Notifier sends pages. Notify queues; Run sends.
type Notifier struct {
	opts    Options
	tr      Transport
	jobs    chan job
	metrics metrics

	mu        sync.Mutex // guards what follows: Run and Interactions share it
	incidents map[string]*incident
	order     []string // incident keys, oldest first, to bound incidents
	byTS      map[string]*incident
	storms    map[string]*storm // open burst summary per rule
	expiries  expiryQueue       // when paged blocks end, soonest first
}

// incident is one incident's message.
type incident struct {
	key         string
	channel, ts string // where its message is; ts is "" in webhook mode
	summary     bool   // the message is a burst summary, not its own
	action      responder.Action
	samples     []string
	status      string
	perMinute   []int
	drawn       time.Time // when perMinute was last asked for, by a refresh
}

// storm is a burst of one rule's incidents paged as one summary.
//
// Its size does not grow with the burst: an attacker spraying addresses
// adds to counters and, at most, to the top offenders.
type storm struct {
	channel, ts   string
	first, last   time.Time // the first incident's start, the last update
	latest        time.Time // the newest event seen in any incident
	keys, blocked int
	severity      string // the highest seen, by rank
	rank          int
	top           []responder.Action // the most attempts first, at most topOffenders
	pending       []responder.Action // joined since the summary was last sent
}

// topOffenders is how many offenders a summary names.
const topOffenders = 10

type job struct {
	action *responder.Action
	button *buttonOutcome
	lifted *lifted
}

// lifted says a target's block ended before its time: an operator
// unblocked it.
type lifted struct {
	target netip.Prefix
	by     string
}

// buttonOutcome is what a button did, to show on its message.
type buttonOutcome struct {
	channel, ts string
	until       time.Time // the block's new end, after Extend
	status      string
	unblocked   bool
}

type metrics struct {
	sent        *prometheus.CounterVec
	retries     prometheus.Counter
	rateLimited prometheus.Counter
	failed      prometheus.Counter
	dropped     prometheus.Counter
	coalesced   prometheus.Counter
	queued      prometheus.GaugeFunc
	interaction *prometheus.CounterVec
}

// New returns a notifier, or an error when the options are inconsistent.
func New(opts Options) (*Notifier, error) {
	if opts.Coalesce == 0 {
		opts.Coalesce = 2 * time.Second
	}
	if opts.CoalesceMin <= 0 {
		opts.CoalesceMin = 3
	}
	if opts.StormHold <= 0 {
		opts.StormHold = time.Minute
	}
	if opts.Queue <= 0 {
		opts.Queue = 1000
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Minute
	}
	if opts.Remember <= 0 {
		opts.Remember = 10_000
	}
	if opts.Refresh == 0 {
		opts.Refresh = time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.Transport == nil:
		return nil, errors.New("slack: no token, webhook or terminal to page")
	case opts.Transport.Updates() && opts.Channel == "":
		return nil, errors.New("slack: a bot token needs a channel")
	}
	n := &Notifier{opts: opts, tr: opts.Transport, jobs: make(chan job, opts.Queue),
		incidents: map[string]*incident{}, byTS: map[string]*incident{}, storms: map[string]*storm{}}
	n.metrics = metrics{
		sent:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_slack_messages_total", Help: "Slack calls that succeeded, by kind (post, update, reply, summary)."}, []string{"kind"}),
		retries:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_slack_retries_total", Help: "Slack calls retried after a rate limit, a server error or a network error."}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_slack_rate_limited_total", Help: "Slack calls answered 429 (Retry-After honoured)."}),
		failed:      prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_slack_failed_total", Help: "Slack calls given up on: Slack refused them for good (bad token, unknown channel) or shutdown came first."}),
		dropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_slack_dropped_total", Help: "Pages dropped because the Slack queue was full."}),
		coalesced:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_slack_coalesced_total", Help: "Incidents paged as part of a burst summary instead of a message of their own."}),
		queued:      prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_slack_queue_length", Help: "Pages waiting to be sent to Slack."}, func() float64 { return float64(len(n.jobs)) }),
		interaction: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_slack_interactions_total", Help: "Slack button presses, by action and outcome."}, []string{"action", "outcome"}),
	}
	for _, k := range []string{"post", "update", "reply", "summary"} {
		n.metrics.sent.WithLabelValues(k)
	}
	if opts.Registry != nil {
		m := n.metrics
		opts.Registry.MustRegister(m.sent, m.retries, m.rateLimited, m.failed, m.dropped, m.coalesced, m.queued, m.interaction)
	}
	return n, nil
}

// Notify queues a page; it never waits for Slack.
func (n *Notifier) Notify(_ context.Context, a responder.Action) error {
	n.enqueue(job{action: &a}, "page dropped", "rule", a.Decision.Rule, "key", a.Decision.Key, "severity", a.Decision.Severity)
	return nil
}

// enqueue queues j for Run without waiting; when the queue is full j is
// dropped, counted and logged as lost (with attrs).
func (n *Notifier) enqueue(j job, lost string, attrs ...any) {
	select {
	case n.jobs <- j:
	default:
		n.metrics.dropped.Inc()
		n.opts.Log.Error("slack queue full: "+lost, attrs...)
	}
}

// maxBatch bounds the pages one coalescing window gathers; a storm beyond
// it is sent in several batches (joining the same summary).
const maxBatch = 10_000

// shutdownGrace bounds how long queued pages are still sent after Run's
// context ends.
const shutdownGrace = 5 * time.Second

// Run sends queued pages until ctx ends, then sends what is still queued
// within a short grace.
func (n *Notifier) Run(ctx context.Context) {
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	var refresh <-chan time.Time
	if n.opts.Refresh > 0 && n.opts.Attempts != nil && n.tr.Updates() {
		t := time.NewTicker(n.opts.Refresh)
		defer t.Stop()
		refresh = t.C
	}
	for {
		n.mu.Lock()
		next := time.Hour
		if len(n.expiries) > 0 {
			next = max(n.expiries[0].at.Sub(n.opts.Now()), 0)
		}
		n.mu.Unlock()
		expiry.Reset(next)
		var batch []job
		select {
		case <-ctx.Done():
			n.flush(nil)
			return
		case <-expiry.C:
			n.expire(ctx, n.opts.Now())
			continue
		case <-refresh:
			n.redraw(ctx, n.opts.Now())
			continue
		case j := <-n.jobs:
			batch = append(batch, j)
		}
		// A button's outcome is shown at once; pages wait for others to
		// join them.
		if batch[0].action != nil && n.opts.Coalesce > 0 {
			t := time.NewTimer(n.opts.Coalesce)
		collect:
			for len(batch) < maxBatch {
				select {
				case j := <-n.jobs:
					batch = append(batch, j)
				case <-t.C:
					break collect
				case <-ctx.Done():
					t.Stop()
					break collect
				}
			}
		}
		if ctx.Err() != nil {
			n.flush(batch)
			return
		}
		n.send(ctx, batch)
	}
}

// flush sends batch and whatever is still queued, within shutdownGrace:
// Run's context has ended.
func (n *Notifier) flush(batch []job) {
	for len(n.jobs) > 0 { // Run is the only receiver: this never waits
		batch = append(batch, <-n.jobs)
	}
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	n.send(ctx, batch)
}

// incidentKey identifies an incident across its pages: the incident the
// store keeps, or else the rule, the key and when the incident began (an
// incident that closes and opens again later is another one).
func incidentKey(a responder.Action) string {
	if a.Incident != "" {
		return a.Incident
	}
	return a.Decision.Rule + "|" + a.Decision.Key + "|" + strconv.FormatInt(a.Decision.FirstSeen.UnixNano(), 10)
}

func (n *Notifier) channelFor(severity string) string {
	if c, ok := n.opts.Routes[severity]; ok && c != "" {
		return c
	}
	return n.opts.Channel
}

// send carries out one batch in order: button outcomes, pages about known
// incidents (update and thread reply), new incidents (a message each, or a
// burst summary), then the summaries.
func (n *Notifier) send(ctx context.Context, batch []job) {
	now := n.opts.Now()
	fresh := map[string]int{} // new incidents per rule in this batch
	for _, j := range batch {
		if a := j.action; a != nil && n.lookup(incidentKey(*a)) == nil {
			fresh[a.Decision.Rule]++
		}
	}
	touched := map[string]bool{}
	for _, j := range batch {
		if j.button != nil {
			n.showButton(ctx, j.button)
			continue
		}
		if j.lifted != nil {
			n.lift(ctx, j.lifted)
			continue
		}
		a := *j.action
		rule := a.Decision.Rule
		if inc := n.lookup(incidentKey(a)); inc != nil {
			n.follow(ctx, inc, a)
			continue
		}
		if inc := n.recall(ctx, a); inc != nil {
			n.follow(ctx, inc, a)
			continue
		}
		n.mu.Lock()
		st := n.storms[rule]
		open := st != nil && now.Sub(st.last) < n.opts.StormHold
		n.mu.Unlock()
		if a.Decision.Key != "" && (open || fresh[rule] >= n.opts.CoalesceMin) {
			n.join(rule, a, now)
			touched[rule] = true
			continue
		}
		n.page(ctx, a)
	}
	rules := make([]string, 0, len(touched))
	for r := range touched {
		rules = append(rules, r)
	}
	sort.Strings(rules)
	for _, r := range rules {
		n.postSummary(ctx, r, now)
	}
}

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
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slack-go/slack"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/backoff"
)

// Options configure the notifier. Set Token and Channel for bot-token mode,
// or WebhookURL; with neither, pages go to Terminal.
type Options struct {
	Token      string
	Channel    string
	WebhookURL string
	// APIURL overrides Slack's API base URL (for slacktest).
	APIURL string
	// Terminal receives pages when no Slack destination is configured.
	Terminal io.Writer

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
	SaveMessage(ctx context.Context, ip netip.Addr, incident, channel, ts string) error
	LoadMessage(ctx context.Context, ip netip.Addr, incident string) (channel, ts string, err error)
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
	api     *slack.Client
	jobs    chan job
	metrics metrics
	termMu  sync.Mutex // serialises terminal output

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

// lifted says an IP's block ended before its time: an operator unblocked it.
type lifted struct {
	ip netip.Addr
	by string
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
	n := &Notifier{opts: opts, jobs: make(chan job, opts.Queue),
		incidents: map[string]*incident{}, byTS: map[string]*incident{}, storms: map[string]*storm{}}
	switch {
	case opts.Token != "":
		if opts.Channel == "" {
			return nil, errors.New("slack: a bot token needs a channel")
		}
		var o []slack.Option
		if opts.APIURL != "" {
			o = append(o, slack.OptionAPIURL(opts.APIURL))
		}
		n.api = slack.New(opts.Token, o...)
	case opts.WebhookURL != "":
	case opts.Terminal == nil:
		return nil, errors.New("slack: no token, webhook or terminal to page")
	}
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

// Notify queues a page; it never waits for Slack. Without a Slack
// destination the page is written to the terminal at once.
func (n *Notifier) Notify(ctx context.Context, a responder.Action) error {
	if n.toTerminal() {
		n.termMu.Lock()
		defer n.termMu.Unlock()
		p := Page{Samples: samples(nil, a.Decision.Sample), MaskUsernames: n.opts.MaskUsernames, PerMinute: n.attempts(ctx, a)}
		_, err := io.WriteString(n.opts.Terminal, Render(a, p).Terminal())
		return err
	}
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

// toTerminal says pages go to the terminal: no Slack destination is set.
func (n *Notifier) toTerminal() bool { return n.api == nil && n.opts.WebhookURL == "" }

// maxBatch bounds the pages one coalescing window gathers; a storm beyond
// it is sent in several batches (joining the same summary).
const maxBatch = 10_000

// shutdownGrace bounds how long queued pages are still sent after Run's
// context ends.
const shutdownGrace = 5 * time.Second

// Run sends queued pages until ctx ends, then sends what is still queued
// within a short grace. It returns at once when there is no Slack
// destination (Notify writes to the terminal itself).
func (n *Notifier) Run(ctx context.Context) {
	if n.toTerminal() {
		return
	}
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	var refresh <-chan time.Time
	if n.opts.Refresh > 0 && n.opts.Attempts != nil && n.api != nil {
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

func (n *Notifier) lookup(key string) *incident {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.incidents[key]
}

// remember records an incident's message, forgetting the oldest beyond the
// bound.
func (n *Notifier) remember(inc *incident) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.incidents[inc.key]; !ok {
		n.order = append(n.order, inc.key)
	}
	n.incidents[inc.key] = inc
	if inc.ts != "" && !inc.summary {
		n.byTS[inc.channel+"/"+inc.ts] = inc
	}
	for len(n.order) > n.opts.Remember {
		old := n.incidents[n.order[0]]
		delete(n.incidents, n.order[0])
		if old != nil {
			delete(n.byTS, old.channel+"/"+old.ts)
		}
		n.order = n.order[1:]
	}
}

func samples(prev []string, line string) []string {
	if line == "" {
		return prev
	}
	out := append(append([]string(nil), prev...), line)
	return out[max(0, len(out)-3):]
}

func (n *Notifier) pageOf(inc *incident) Page {
	return Page{Samples: inc.samples, Status: inc.status, Buttons: n.opts.Buttons && inc.status == "",
		MaskUsernames: n.opts.MaskUsernames, Explore: n.opts.Explore, PerMinute: inc.perMinute}
}

// attempts asks for the incident's attempts per minute; nil when there is
// no source, the key is a prefix, or the source does not answer in time.
func (n *Notifier) attempts(ctx context.Context, a responder.Action) []int {
	d := a.Decision
	if n.opts.Attempts == nil || d.FirstSeen.IsZero() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, attemptsTimeout)
	defer cancel()
	counts, err := n.opts.Attempts.AttemptsPerMinute(ctx, d.Key, d.FirstSeen, d.LastSeen)
	if err != nil {
		n.opts.Log.Debug("no attempts per minute for the page", "key", d.Key, "err", err)
		return nil
	}
	return counts
}

// page posts a new incident's message.
func (n *Notifier) page(ctx context.Context, a responder.Action) {
	inc := &incident{key: incidentKey(a), action: a, samples: samples(nil, a.Decision.Sample), perMinute: n.attempts(ctx, a)}
	if !n.open(ctx, inc, n.channelFor(a.Decision.Severity)) {
		return
	}
	n.watchExpiry(inc)
	if n.opts.Messages != nil && a.Incident != "" && a.Decision.IP.IsValid() && inc.ts != "" {
		if err := n.opts.Messages.SaveMessage(ctx, a.Decision.IP, a.Incident, inc.channel, inc.ts); err != nil {
			n.opts.Log.Warn("page location not kept; after a restart its escalations are posted anew", "err", err)
		}
	}
}

// open posts inc's page as a new message in channel, with the mention of
// its severity, and remembers where it is. inc must not be shared yet.
func (n *Notifier) open(ctx context.Context, inc *incident, channel string) bool {
	m := Render(inc.action, n.pageOf(inc))
	ch, ts, err := n.post(ctx, channel, n.mention(inc.action.Decision.Severity, m.Text), m, "")
	if err != nil {
		n.giveUp(err, inc.action)
		return false
	}
	n.metrics.sent.WithLabelValues("post").Inc()
	inc.channel, inc.ts = ch, ts
	n.remember(inc)
	return true
}

// mention puts the severity's mention (e.g. <!here>) before a new page's
// text.
func (n *Notifier) mention(severity, text string) string {
	if m := n.opts.Mentions[severity]; m != "" {
		return m + " " + text
	}
	return text
}

// updated replaces a posted page with m and counts it; on failure it gives
// up (logged, counted) and says so.
func (n *Notifier) updated(ctx context.Context, channel, ts string, m Message, a responder.Action) bool {
	if err := n.update(ctx, channel, ts, m); err != nil {
		n.giveUp(err, a)
		return false
	}
	n.metrics.sent.WithLabelValues("update").Inc()
	return true
}

// replied posts text in a page's thread and counts it; on failure it gives
// up (logged, counted) and says so.
func (n *Notifier) replied(ctx context.Context, channel, ts, text string, a responder.Action) bool {
	if _, _, err := n.post(ctx, channel, text, Message{}, ts); err != nil {
		n.giveUp(err, a)
		return false
	}
	n.metrics.sent.WithLabelValues("reply").Inc()
	return true
}

// recall finds the page of an incident paged before this process started:
// a later page about it (an escalation) then updates that page.
func (n *Notifier) recall(ctx context.Context, a responder.Action) *incident {
	if n.opts.Messages == nil || n.api == nil || a.Incident == "" || !a.Decision.IP.IsValid() || !a.Decision.Escalation {
		return nil
	}
	channel, ts, err := n.opts.Messages.LoadMessage(ctx, a.Decision.IP, a.Incident)
	if err != nil || ts == "" {
		return nil
	}
	prev := a
	prev.Decision.Escalation = false
	prev.Decision.Severity = "" // not known any more
	inc := &incident{key: incidentKey(a), channel: channel, ts: ts, action: prev}
	n.remember(inc)
	return inc
}

// follow shows a later page about a known incident: its message updated in
// place and a thread reply; in webhook mode, a new post.
func (n *Notifier) follow(ctx context.Context, inc *incident, a responder.Action) {
	if inc.ts == "" {
		n.page(ctx, a)
		return
	}
	var perMinute []int
	if !inc.summary {
		perMinute = n.attempts(ctx, a) // a Loki query: outside the lock
	}
	n.mu.Lock()
	prev := inc.action.Decision.Severity
	var m Message
	if !inc.summary {
		inc.action = a
		inc.samples = samples(inc.samples, a.Decision.Sample)
		if perMinute != nil {
			inc.perMinute = perMinute
		}
		m = Render(a, n.pageOf(inc))
	}
	n.mu.Unlock()
	n.watchExpiry(inc)
	if !inc.summary && !n.updated(ctx, inc.channel, inc.ts, m, a) {
		return
	}
	d := a.Decision
	reply := fmt.Sprintf("%s: %s, %d failed attempts (%.1f/min); %s", d.Severity, IncidentType(d), d.Count, d.RatePerMinute, actionText(a))
	switch {
	case d.Escalation && inc.summary:
		reply = fmt.Sprintf("`%s` escalated to %s: %d failed attempts, %.1f/min", d.Key, d.Severity, d.Count, d.RatePerMinute)
	case d.Escalation && prev == "":
		reply = fmt.Sprintf("Escalated to %s: %d failed attempts, %.1f/min", d.Severity, d.Count, d.RatePerMinute)
	case d.Escalation:
		reply = fmt.Sprintf("Escalated %s → %s: %d failed attempts, %.1f/min", prev, d.Severity, d.Count, d.RatePerMinute)
	}
	if !n.replied(ctx, inc.channel, inc.ts, reply, a) {
		return
	}
	// An escalation into a severity routed elsewhere is paged there too.
	if to := n.channelFor(d.Severity); d.Escalation && !inc.summary && to != n.channelFor(prev) {
		n.mu.Lock()
		fresh := &incident{key: inc.key, action: a, samples: inc.samples, perMinute: inc.perMinute}
		n.mu.Unlock()
		n.open(ctx, fresh, to)
	}
}

// Unblocked queues the news that an operator unblocked ip (with the CLI;
// the buttons show their own): the pages about its standing block say so
// and reply in their threads.
func (n *Notifier) Unblocked(ip netip.Addr, by string) {
	if n.api == nil {
		return
	}
	n.enqueue(job{lifted: &lifted{ip, by}}, "unblock not shown", "ip", ip)
}

// lift shows an unblock on the pages of the IP's standing blocks.
func (n *Notifier) lift(ctx context.Context, l *lifted) {
	at := detector.FormatTime(n.opts.Now())
	status := "Unblocked by " + l.by + " at " + at
	if l.by == "" {
		status = "Unblocked at " + at
	}
	n.mu.Lock()
	var open []*incident
	for _, inc := range n.incidents {
		if !inc.summary && inc.ts != "" && inc.status == "" && inc.action.Blocked && inc.action.Decision.IP == l.ip {
			inc.status = status
			open = append(open, inc)
		}
	}
	n.mu.Unlock()
	for _, inc := range open {
		n.showStatus(ctx, inc, status)
	}
}

// expire shows on their pages the blocks that have ended by now.
func (n *Notifier) expire(ctx context.Context, now time.Time) {
	var ended []*incident
	n.mu.Lock()
	for len(n.expiries) > 0 && !n.expiries[0].at.After(now) {
		e := heap.Pop(&n.expiries).(expiry)
		inc := n.incidents[e.key]
		// Skip what was forgotten, unblocked, or renewed since.
		if inc == nil || inc.status != "" || inc.action.Expires.After(now) {
			continue
		}
		inc.status = "Block expired at " + detector.FormatTime(inc.action.Expires)
		ended = append(ended, inc)
	}
	n.mu.Unlock()
	for _, inc := range ended {
		n.showStatus(ctx, inc, inc.status)
	}
}

// showStatus updates an incident's message with status (and without
// buttons) and replies with it in the thread.
func (n *Notifier) showStatus(ctx context.Context, inc *incident, status string) {
	n.mu.Lock()
	m := Render(inc.action, n.pageOf(inc))
	a := inc.action
	n.mu.Unlock()
	if n.updated(ctx, inc.channel, inc.ts, m, a) {
		n.replied(ctx, inc.channel, inc.ts, status, a)
	}
}

// refreshPerRound bounds the pages one refresh round redraws, to stay far
// below Slack's rate limit for chat.update.
const refreshPerRound = 20

// redraw refreshes the attempts per minute of open incidents and updates
// the pages of those that had more attempts since they were drawn: a
// dry-run or alert-only incident goes on, and its page shows it. Blocked
// attackers are refused by the gateway and add nothing, so their pages
// stay as they are.
func (n *Notifier) redraw(ctx context.Context, now time.Time) {
	n.mu.Lock()
	var open []*incident
	for _, key := range n.order {
		inc := n.incidents[key]
		if inc == nil || inc.summary || inc.ts == "" || inc.status != "" || inc.perMinute == nil {
			continue
		}
		if a := inc.action; (a.Blocked && a.Expires.After(now)) || (!a.Blocked && now.Sub(a.Decision.LastSeen) < time.Hour) {
			open = append(open, inc)
		}
	}
	n.mu.Unlock()
	// The least recently drawn first.
	sort.SliceStable(open, func(i, j int) bool { return open[i].drawn.Before(open[j].drawn) })
	for _, inc := range open[:min(len(open), refreshPerRound)] {
		n.mu.Lock()
		a := inc.action
		before := sum(inc.perMinute)
		inc.drawn = now
		n.mu.Unlock()
		a.Decision.LastSeen = now
		counts := n.attempts(ctx, a)
		if counts == nil || sum(counts) <= before {
			continue
		}
		n.mu.Lock()
		inc.perMinute = counts
		m := Render(inc.action, n.pageOf(inc))
		n.mu.Unlock()
		n.updated(ctx, inc.channel, inc.ts, m, a)
	}
}

func sum(counts []int) int {
	total := 0
	for _, c := range counts {
		total += c
	}
	return total
}

// watchExpiry notes when a paged block ends, so its page can say so.
func (n *Notifier) watchExpiry(inc *incident) {
	if n.api == nil || inc.summary || inc.ts == "" || !inc.action.Blocked || inc.action.Expires.IsZero() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	heap.Push(&n.expiries, expiry{inc.action.Expires, inc.key})
	// Bounded like the incidents; past the bound an entry is dropped, and
	// its page does not say when its block ended. The dropped one is a
	// leaf: what is left is still a heap.
	if bound := 2 * n.opts.Remember; len(n.expiries) > bound {
		n.expiries = n.expiries[:bound]
	}
}

// expiry is when an incident's block ends.
type expiry struct {
	at  time.Time
	key string
}

// expiryQueue is a min-heap of expiries.
type expiryQueue []expiry

func (q expiryQueue) Len() int           { return len(q) }
func (q expiryQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q expiryQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *expiryQueue) Push(x any)        { *q = append(*q, x.(expiry)) }
func (q *expiryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// join adds a new incident to its rule's burst.
func (n *Notifier) join(rule string, a responder.Action, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.storms[rule]
	if st == nil || now.Sub(st.last) >= n.opts.StormHold {
		st = &storm{first: a.Decision.FirstSeen}
		n.storms[rule] = st
	}
	d := a.Decision
	st.keys++
	if a.Blocked {
		st.blocked++
	}
	if d.FirstSeen.Before(st.first) {
		st.first = d.FirstSeen
	}
	st.latest = maxTime(st.latest, d.LastSeen)
	if st.severity == "" || d.SeverityRank < st.rank {
		st.severity, st.rank = d.Severity, d.SeverityRank
	}
	// Keep the offenders with the most attempts, most first.
	i := sort.Search(len(st.top), func(i int) bool {
		t := st.top[i].Decision
		return t.Count < d.Count || (t.Count == d.Count && t.Key > d.Key)
	})
	if i < topOffenders {
		st.top = append(st.top[:i], append([]responder.Action{a}, st.top[i:]...)...)
		st.top = st.top[:min(len(st.top), topOffenders)]
	}
	st.pending = append(st.pending, a)
	st.last = now
	n.metrics.coalesced.Inc()
}

// postSummary posts a burst's summary, or updates the one already posted.
func (n *Notifier) postSummary(ctx context.Context, rule string, now time.Time) {
	n.mu.Lock()
	st := n.storms[rule]
	s := Summary{Rule: rule, Severity: st.severity, SeverityRank: st.rank, Keys: st.keys, Blocked: st.blocked, Span: st.latest.Sub(st.first),
		Top: append([]responder.Action(nil), st.top...)}
	// Taken now, so that a summary Slack refuses for good does not hold
	// them (and let them pile up) for the next.
	pending := st.pending
	st.pending = nil
	channel, ts := st.channel, st.ts
	n.mu.Unlock()
	m := RenderSummary(s)
	if ts == "" || n.api == nil {
		ch, newTS, err := n.post(ctx, n.channelFor(s.Severity), n.mention(s.Severity, m.Text), m, "")
		if err != nil {
			n.giveUp(err, responder.Action{})
			return
		}
		channel, ts = ch, newTS
	} else if err := n.update(ctx, channel, ts, m); err != nil {
		n.giveUp(err, responder.Action{})
		return
	}
	n.metrics.sent.WithLabelValues("summary").Inc()
	n.mu.Lock()
	st.channel, st.ts = channel, ts
	var members []*incident
	for _, a := range pending {
		if n.incidents[incidentKey(a)] == nil {
			members = append(members, &incident{key: incidentKey(a), channel: channel, ts: ts, summary: true, action: a})
		}
	}
	n.mu.Unlock()
	for _, inc := range members {
		n.remember(inc)
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// post sends a message (a thread reply when thread is set) through the
// API or the webhook, with retries; it returns the channel ID and ts.
func (n *Notifier) post(ctx context.Context, channel, text string, m Message, thread string) (ch, ts string, err error) {
	err = n.retry(ctx, func() error {
		if n.api == nil {
			msg := &slack.WebhookMessage{Text: text}
			if m.Attachment.Color != "" {
				msg.Attachments = []slack.Attachment{m.Attachment}
			}
			return slack.PostWebhookContext(ctx, n.opts.WebhookURL, msg)
		}
		opts := []slack.MsgOption{slack.MsgOptionText(text, false)}
		if m.Attachment.Color != "" {
			opts = append(opts, slack.MsgOptionAttachments(m.Attachment))
		}
		if thread != "" {
			opts = append(opts, slack.MsgOptionTS(thread))
		}
		var err error
		ch, ts, err = n.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ch, ts, err
}

// update replaces a posted message with m (chat.update), with retries.
func (n *Notifier) update(ctx context.Context, channel, ts string, m Message) error {
	return n.retry(ctx, func() error {
		_, _, _, err := n.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(m.Text, false), slack.MsgOptionAttachments(m.Attachment))
		return err
	})
}

// retry calls op until it succeeds, Slack refuses it for good, or ctx ends.
// A 429 waits its Retry-After; server and network errors back off.
func (n *Notifier) retry(ctx context.Context, op func() error) error {
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		wait := backoff.Jitter(attempt, n.opts.RetryBase, n.opts.RetryMax)
		var rl *slack.RateLimitedError
		switch {
		case errors.As(err, &rl):
			n.metrics.rateLimited.Inc()
			wait = max(rl.RetryAfter, time.Millisecond)
		case !transient(err):
			return err
		}
		n.metrics.retries.Inc()
		n.opts.Log.Warn("slack call failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// transient says whether a failed call may work if tried again: server
// errors and network trouble, not Slack's refusals (bad token, unknown
// channel), which repeat forever.
func transient(err error) bool {
	var sc slack.StatusCodeError
	if errors.As(err, &sc) {
		return sc.Code >= 500 || sc.Code == 408
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err == "internal_error" || se.Err == "service_unavailable" || se.Err == "request_timeout" || se.Err == "fatal_error"
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func (n *Notifier) giveUp(err error, a responder.Action) {
	n.metrics.failed.Inc()
	n.opts.Log.Error("slack page not delivered", "err", err, "rule", a.Decision.Rule, "key", a.Decision.Key, "severity", a.Decision.Severity)
}

package slack

import (
	"container/heap"
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
)

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
	if n.opts.Messages != nil && a.Incident != "" && a.Decision.Net.IsValid() && inc.ts != "" {
		if err := n.opts.Messages.SaveMessage(ctx, a.Decision.Net, a.Incident, inc.channel, inc.ts); err != nil {
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
	if n.opts.Messages == nil || !n.tr.Updates() || a.Incident == "" || !a.Decision.Net.IsValid() || !a.Decision.Escalation {
		return nil
	}
	channel, ts, err := n.opts.Messages.LoadMessage(ctx, a.Decision.Net, a.Incident)
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

// Unblocked queues the news that an operator unblocked target (with the
// CLI; the buttons show their own): the pages about its standing block say
// so and reply in their threads.
func (n *Notifier) Unblocked(target netip.Prefix, by string) {
	if !n.tr.Updates() {
		return
	}
	n.enqueue(job{lifted: &lifted{target, by}}, "unblock not shown", "ip", blockset.Target(target))
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
		if !inc.summary && inc.ts != "" && inc.status == "" && inc.action.Blocked() && inc.action.Decision.Net == l.target {
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
		if a := inc.action; (a.Blocked() && a.Expires.After(now)) || (!a.Blocked() && now.Sub(a.Decision.LastSeen) < time.Hour) {
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
	if !n.tr.Updates() || inc.summary || inc.ts == "" || !inc.action.Blocked() || inc.action.Expires.IsZero() {
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

package slack

import (
	"context"
	"sort"
	"time"

	"github.com/authguard/authguard/responder"
)

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
	if a.Blocked() {
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
	if ts == "" || !n.tr.Updates() {
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

package responder

import (
	"context"
	"time"

	"github.com/authguard/authguard/responder/backoff"
)

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
			wait := backoff.Jitter(attempt, time.Second, time.Minute)
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
	if a.Blocked() {
		attrs = append(attrs, "ttl_seconds", int(d.TTL.Seconds()), "expires", a.Expires.UTC().Format(time.RFC3339), "offence", d.Offence)
	}
	if a.Incident != "" {
		attrs = append(attrs, "incident", a.Incident)
	}
	r.opts.Log.Info("evidence", append([]any{"action", a.Act.String()}, attrs...)...)
}

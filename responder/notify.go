package responder

import (
	"time"
)

// evidence writes the runbook's record of an action: UTC time, IP, trigger,
// action, TTL and expiry.
func (r *Responder) evidence(a Action) {
	d := a.Decision
	attrs := []any{"time", a.At.UTC().Format(time.RFC3339), "rule", d.Rule, "key", d.Key,
		"trigger", d.Trigger(), "severity", d.Severity, "count", d.Count,
		"first_seen", d.FirstSeen.Format(time.RFC3339), "last_seen", d.LastSeen.Format(time.RFC3339)}
	if d.GroupBy != "" {
		attrs = append(attrs, "group_by", d.GroupBy, "sources", d.Sources)
	}
	if d.Accounts != nil {
		attrs = append(attrs, "accounts", d.Accounts, "suspect", d.Suspect)
	}
	if d.SourceOf != "" {
		attrs = append(attrs, "source_of", d.SourceOf)
	}
	if a.Blocked() || a.Act == ActProtect {
		attrs = append(attrs, "ttl_seconds", int(d.TTL.Seconds()), "expires", a.Expires.UTC().Format(time.RFC3339), "offence", d.Offence)
	}
	if a.Incident != "" {
		attrs = append(attrs, "incident", a.Incident)
	}
	r.opts.Log.Info("evidence", append([]any{"action", a.Act.String()}, attrs...)...)
}

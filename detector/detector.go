// Package detector is authguard's pure decision engine: it turns authentication
// events into decisions (block an IP, raise an alert) using exact event-time
// sliding windows per group key. It performs no I/O and reads no clock: time
// comes from the events themselves.
package detector

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Well-known values of Event.Action.
const (
	ActionAuthFailed    = "auth_failed"
	ActionAuthSucceeded = "auth_succeeded"
)

// Event is one authentication audit event, as read from a log line.
type Event struct {
	// Time is the event time: the Loki entry timestamp, or the line's own
	// timestamp when the source is configured to use it.
	Time time.Time
	// Action is the audit action, e.g. "auth_failed".
	Action string
	// IP is the client address, normalised (IPv4-mapped IPv6 unmapped).
	IP netip.Addr
	// Username is the attempted account name, when known; bounded in length by
	// the source.
	Username string
	// Attrs are the line's other fields that the source was told to read
	// (user_agent, session_id, api_key, ...), each bounded in length.
	Attrs []Attr
	// Line is the raw log line, bounded in length by the source; it is kept for
	// evidence and never parsed again.
	Line string
	// CatchUp marks an event read late, by a catch-up after a gap or the
	// backfill at start, rather than live: what is decided about it dates
	// from its own time.
	CatchUp bool
}

// Attr is one audit field of an event beyond those Event names.
type Attr struct{ Name, Value string }

// Field is the value of the audit field name in ev ("" when absent):
// username, action, or one of Attrs.
func (ev *Event) Field(name string) string {
	switch name {
	case "username":
		return ev.Username
	case "action":
		return ev.Action
	}
	for _, a := range ev.Attrs {
		if a.Name == name {
			return a.Value
		}
	}
	return ""
}

// Kind says what a Decision asks the responders to do.
type Kind string

// Decision kinds.
const (
	// KindBlock asks for the key's IP to be blocked for TTL.
	KindBlock Kind = "block"
	// KindAlert asks for an alert only; nothing is blocked.
	KindAlert Kind = "alert"
	// KindProtect asks for the account Key to be protected for TTL.
	KindProtect Kind = "protect"
)

// Decision is what the engine concluded from one event.
type Decision struct {
	// Time is the event time of the event that triggered the decision.
	Time time.Time
	// Rule is the name of the rule that fired.
	Rule string
	// Key is the group key: an IP or an IP prefix in text form, the value
	// of GroupBy, or "" for a global rule.
	Key string
	// GroupBy names the audit field Key is a value of, for rules grouped
	// by a field other than the address ("username", "session_id").
	GroupBy string
	// Sources are the client addresses of the events in the window, for a
	// rule grouped by another field: at most Threshold of them, newest
	// last, each once.
	Sources []netip.Addr
	// Accounts, on a possible account takeover, are the accounts logged
	// into from Key's address since the incident opened; Suspect says why
	// that address is suspect.
	Accounts []string
	Suspect  string
	// Protects, on the alert of a rule that protects its account, is how
	// long the account is protected.
	Protects time.Duration
	// SourceOf, on a block of one of a grouped rule's sources, names the
	// group it contributed to ("username alice").
	SourceOf string
	// Net is what a block applies to: one address (a full-length prefix)
	// or, for a rule that groups by prefix, the network; invalid for
	// global rules.
	Net netip.Prefix
	// Kind is block or alert.
	Kind Kind
	// TTL is the block duration; zero for alerts.
	TTL time.Duration
	// Severity is the incident severity derived from the attempt rate: the
	// name of its level in the rules' scale, for display.
	Severity string
	// SeverityRank is that level's place in the scale, 0 the most severe;
	// colours, ordering and a burst's severity follow it, never the name.
	SeverityRank int
	// Count is the number of matching events for the key since its clean
	// slate (start, block expiry or reset), the tally the runbook keeps in
	// login_fail:<ip>.
	Count int
	// Distinct is the number of distinct values of DistinctOf in the
	// window, for distinct-counting rules.
	Distinct   int
	DistinctOf string
	// RatePerMinute is the attempt rate from which Severity was derived.
	RatePerMinute float64
	// FirstSeen and LastSeen bound the counted events.
	FirstSeen, LastSeen time.Time
	// Alert says whether the rule wants a page for this decision.
	Alert bool
	// Renewal is true when the key was already blocked by this rule and a new
	// matching event arrived before the block expired: the block is written
	// again (runbook SEC-010: deleting only ip_block:<ip> is not an unblock).
	Renewal bool
	// Offence numbers the key's blocks by this rule (1 for the first); the
	// TTL is escalated from it.
	Offence int
	// DryRun says the rule only records and pages: no block is written.
	DryRun bool
	// Restored marks a standing block written again because Redis lost
	// it (see Engine.ActiveBlocks).
	Restored bool
	// Escalation marks a decision about an open incident whose severity has
	// risen (P3 to P2 to P1): a page update, not a new incident.
	Escalation bool
	// Sample is the raw line of the triggering event.
	Sample string
	// Match, Threshold and Window restate the rule, for the trigger in words.
	Match     string
	Threshold int
	Window    time.Duration
}

// Trigger says in words what made the rule fire, as the runbook's evidence
// record wants it: "5 auth_failed events within 24h0m0s".
func (d Decision) Trigger() string {
	if d.Accounts != nil {
		return "a login to " + d.Accounts[len(d.Accounts)-1] + " from " + d.Key + ", " + d.Suspect
	}
	what := d.Match
	if what == "" {
		what = "matching"
	}
	scope := "from " + d.Key
	switch {
	case d.SourceOf != "":
		scope = "for " + d.SourceOf + ", " + d.Key + " among them"
	case d.GroupBy != "":
		scope = "for " + d.GroupBy + " " + d.Key
	case d.Key == "":
		scope = "in total"
	}
	// Concatenation, not fmt: this is written into every evidence record.
	n := strconv.Itoa(d.Threshold)
	if d.Distinct > 0 {
		return n + " or more distinct " + Plural(d.DistinctOf) + " " + scope + " within " + FormatDuration(d.Window)
	}
	return n + " or more " + what + " events " + scope + " within " + FormatDuration(d.Window)
}

// Plural names the values of an audit field in the plural, for people:
// "usernames", "client addresses", "session_id values".
func Plural(field string) string {
	switch field {
	case "username", "":
		return "usernames"
	case "client_ip":
		return "client addresses"
	}
	return field + " values"
}

// FormatTime writes a moment the way pages, reports and the CLI show it to
// people: in UTC, to the second, saying so ("2026-11-22 10:00:00 UTC").
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// FormatDuration writes a duration the way operators write them in rules:
// 24h, 5m, 1h30m, 90s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Expires is the time the block ends, counted from the triggering event.
func (d Decision) Expires() time.Time { return d.Time.Add(d.TTL) }

package detector

import (
	"math"
	"net/netip"
	"time"
)

// Rule is one compiled detection rule. The rules package builds these from
// YAML; tests may build them directly.
type Rule struct {
	// Name identifies the rule in decisions, metrics and pages.
	Name string
	// Match is the event action the rule counts, e.g. "auth_failed".
	Match string
	// PerIP groups events by client address. With neither PerIP nor
	// GroupBy the rule is global: it counts all matching events together.
	PerIP bool
	// GroupBy groups events by another audit field ("username",
	// "session_id", ...): the field's value is the key, and events without
	// it are not counted. Such a rule blocks no key; with BlockSources it
	// blocks the addresses that contributed.
	GroupBy string
	// IPv4Prefix and IPv6Prefix group addresses by network prefix when PerIP
	// is set (32 and 128, the defaults, mean one key per address).
	IPv4Prefix, IPv6Prefix int
	// Window is the sliding window: an event at t counts events in (t-Window, t].
	Window time.Duration
	// Threshold fires the rule when the window holds at least this many events
	// (or, with Distinct, this many distinct values).
	Threshold int
	// Distinct, when set, counts the distinct values of this audit field
	// in the window instead of events: "username" (account enumeration),
	// "client_ip" (one account or session from many addresses), or any
	// other field the source reads. Events without it are not counted by
	// such a rule.
	Distinct string
	// MinSuccessRatio, with Distinct, also requires that at least this
	// share of those accounts' latest attempts succeeded: many accounts
	// from one address, and logging into them works (credential stuffing).
	// Match should then be empty, so both outcomes count.
	MinSuccessRatio float64
	// BlockTTL, when non-zero, makes the rule block the key for this long
	// (with BlockSources, each contributing address).
	BlockTTL time.Duration
	// BlockSources, for a rule grouped by a field, blocks the addresses
	// whose events are in the window when it fires (at most Threshold of
	// them), and then each new one that keeps it firing.
	BlockSources bool
	// Protect, for a rule grouped by username, protects the account for
	// this long when the rule fires (and again while it keeps firing):
	// gateways then refuse logins to it except from addresses that
	// logged into it before.
	Protect time.Duration
	// Escalate lengthens blocks of repeat offenders.
	Escalate Escalation
	// DryRun marks the rule's decisions as not to be carried out: they are
	// recorded and paged, but nothing is blocked.
	DryRun bool
	// Alert asks for a page when the rule fires.
	Alert bool
}

// Escalation multiplies a key's block TTL by Factor for every earlier
// block of it within Remember, up to Max (like fail2ban's
// bantime.increment). A zero Factor (or 1) means no escalation.
type Escalation struct {
	Factor   float64
	Max      time.Duration
	Remember time.Duration
}

// ttl returns the block TTL for a key's offence number n (1 for the first).
func (e Escalation) ttl(base time.Duration, n int) time.Duration {
	if e.Factor <= 1 || n <= 1 {
		return base
	}
	d := float64(base) * math.Pow(e.Factor, float64(n-1))
	if e.Max > 0 && d > float64(e.Max) {
		return e.Max
	}
	if d > float64(math.MaxInt64) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(d)
}

// SeverityLevel maps an attempt rate to a severity: the first level whose
// Above is below the rate wins, levels being tried from the highest Above.
type SeverityLevel struct {
	Level string
	// Above is the rate in attempts per minute that must be exceeded.
	Above float64
}

// DefaultSeverity is the authentication-abuse playbook's scale: P1 above 100
// failed attempts per minute, P2 from 50 to 100, P3 below 50.
var DefaultSeverity = []SeverityLevel{{"P1", 100}, {"P2", 49}, {"P3", 0}}

// DefaultMaxKeys bounds the keys one rule tracks when Config.MaxKeys is zero.
const DefaultMaxKeys = 1 << 20

// MaxKeysLimit is the largest Config.MaxKeys: 67,108,864 keys per rule
// (about 8 GiB of state for the runbook rule).
const MaxKeysLimit = 1 << 26

// Config is everything an Engine needs.
type Config struct {
	Rules []Rule
	// Severity levels; DefaultSeverity when empty.
	Severity []SeverityLevel
	// Allow lists networks whose addresses per-IP rules never count, and so
	// never block or page for. Global rules still count them.
	Allow []netip.Prefix
	// MaxKeys caps the keys tracked per rule; when zero, MemoryBudget
	// decides (see Caps), or DefaultMaxKeys.
	MaxKeys int
	// MemoryBudget is how many bytes the rules' tables may take with every
	// rule at its cap (0: no budget). A rules file whose caps cannot fit
	// it is refused.
	MemoryBudget int64
	// Tolerance is how far behind the newest event an event may arrive and
	// still be counted where it belongs (DefaultTolerance when zero); older
	// ones are counted in Stats.Late and dropped.
	Tolerance time.Duration
	// Takeover turns compromise detection on (see Takeover).
	Takeover Takeover
	// FutureBound is how far ahead of the clock an event may be stamped
	// and still count at its own time (DefaultFutureBound when zero);
	// later stamps count at the clock's time and in Stats.Future.
	FutureBound time.Duration
}

// DefaultTolerance is Config.Tolerance's default.
const DefaultTolerance = 2 * time.Minute

// DefaultFutureBound is Config.FutureBound's default: Loki's
// creation_grace_period, the furthest ahead Loki accepts an entry.
const DefaultFutureBound = 10 * time.Minute

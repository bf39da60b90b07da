package detector

import (
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Takeover configures compromise detection: a login that works, from an
// address that is blocked, was blocked within Memory, or is at least
// half-way to a per-address rule's threshold, is a possible account
// takeover. It is paged at the most severe level whatever the rate, and
// names the accounts logged into from that address.
type Takeover struct {
	// Name is the decisions' rule name; empty turns detection off.
	Name string
	// Memory is how long after a block a login from its address is
	// suspect.
	Memory time.Duration
}

// Takeover limits: incidents followed at once, accounts named in one.
const (
	maxTakeovers       = 10000
	maxTakeoverAccount = 32
)

// takeover is one address's open incident.
type takeover struct {
	accounts    []string
	first, last int64
}

// suspect says why a login from ip at t is suspect ("" when it is not),
// looking at the per-address rules that count failures; it changes no
// window.
func (e *Engine) suspect(ip netip.Addr, t int64) string {
	for _, r := range e.rules {
		if !r.PerIP || (r.Match != "" && r.Match != ActionAuthFailed) {
			continue
		}
		i, ok := r.keys.lookup(r.group(ip).As16())
		if !ok {
			continue
		}
		s, times := &r.keys.slots[i], r.keys.times(i)
		switch {
		case s.blockedUntil > t:
			return "blocked by " + r.Name
		case s.offences > 0 && t-s.lastOffence <= int64(e.takeover.Memory):
			return "blocked by " + r.Name + " within " + FormatDuration(e.takeover.Memory)
		case s.n > 0 && times[s.n-1] > t-r.window && s.halfWay(r.Threshold):
			return "half-way to " + r.Name + " (" + strconv.Itoa(int(s.n)) + " of " + strconv.Itoa(r.Threshold) + ")"
		}
	}
	return ""
}

// checkTakeover decides about a successful login ev at t.
func (e *Engine) checkTakeover(ev *Event, t int64, out []Decision) []Decision {
	why := e.suspect(ev.IP, t)
	if why == "" {
		return out
	}
	user := fold("username", ev.Username)
	inc := e.takeovers[ev.IP]
	if inc == nil || t-inc.last > int64(e.takeover.Memory) {
		if len(e.takeovers) >= maxTakeovers {
			e.forgetTakeovers(t)
		}
		inc = &takeover{first: t}
		e.takeovers[ev.IP] = inc
	}
	inc.last = max(inc.last, t)
	if slices.Contains(inc.accounts, user) {
		return out // this account is named already
	}
	again := len(inc.accounts) > 0
	if len(inc.accounts) >= maxTakeoverAccount {
		return out
	}
	inc.accounts = append(inc.accounts, user)
	d := Decision{Time: ev.Time, Rule: e.takeover.Name, Key: ev.IP.String(), Net: netip.PrefixFrom(ev.IP, ev.IP.BitLen()), Kind: KindAlert, Alert: true,
		Severity: e.severity[0].Level, SeverityRank: 0, Count: len(inc.accounts), Accounts: slices.Clone(inc.accounts),
		Suspect: why, FirstSeen: time.Unix(0, inc.first).UTC(), LastSeen: time.Unix(0, inc.last).UTC(),
		Match: ActionAuthSucceeded, Threshold: 1, Window: e.takeover.Memory, Sample: ev.Line,
		Renewal: again, Escalation: again} // another account: the page grows
	return append(out, d)
}

// forgetTakeovers makes room: incidents older than the memory go, and if
// none are, the oldest.
func (e *Engine) forgetTakeovers(t int64) {
	var oldest netip.Addr
	at := int64(0)
	for ip, inc := range e.takeovers {
		if t-inc.last > int64(e.takeover.Memory) {
			delete(e.takeovers, ip)
		} else if !oldest.IsValid() || inc.last < at {
			oldest, at = ip, inc.last
		}
	}
	if len(e.takeovers) >= maxTakeovers {
		delete(e.takeovers, oldest)
	}
}

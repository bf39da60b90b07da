package main

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"time"

	"github.com/authguard/authguard/detector"
)

// reportData is what the review page shows, gathered as the replay goes:
// failures per minute and per address, and one row per incident, bounded
// by the span, the addresses and the incidents, not by the lines.
type reportData struct {
	files       []string
	events      int
	first, last time.Time
	perMinute   map[int64]int // failures in each minute since the epoch
	offenders   map[netip.Addr]*offender
	incidents   incidents
	compared    bool         // with --baseline
	changes     []ruleChange // from it
}

type offender struct {
	failures    int
	users       map[string]bool
	first, last time.Time
}

// Bounds of what the page lists.
const (
	maxOffenderUsers = 10000
	maxPageIncidents = 500
	maxPageOffenders = 20
	maxPageChanges   = 500
)

func newReportData(files []string) *reportData {
	return &reportData{files: files, perMinute: map[int64]int{}, offenders: map[netip.Addr]*offender{}}
}

func (r *reportData) event(ev *detector.Event) {
	if r.events == 0 {
		r.first = ev.Time
	}
	r.events++
	r.last = ev.Time
	if ev.Action != detector.ActionAuthFailed {
		return
	}
	r.perMinute[ev.Time.Unix()/60]++
	o := r.offenders[ev.IP]
	if o == nil {
		o = &offender{users: map[string]bool{}, first: ev.Time}
		r.offenders[ev.IP] = o
	}
	o.failures++
	o.last = ev.Time
	if ev.Username != "" && len(o.users) < maxOffenderUsers {
		o.users[ev.Username] = true
	}
}

// decision folds d into its incident: a renewal into the block it renews.
func (r *reportData) decision(d replayDecision) { r.incidents.add(d, true) }

// write writes the self-contained review page.
func (r *reportData) write(w io.Writer, byRule map[string]int) error {
	page := reportPage{Generated: time.Now().UTC().Format(time.RFC3339), Files: r.files, Events: r.events}
	for rule, n := range byRule {
		page.RuleCounts = append(page.RuleCounts, fmt.Sprintf("%s: %d", rule, n))
	}
	sort.Strings(page.RuleCounts)
	if r.events > 0 {
		page.From, page.To = r.first.UTC().Format(time.DateTime), r.last.UTC().Format(time.DateTime)
		page.Chart = r.chart()
	}
	page.Rules = r.rules()
	page.Incidents, page.MoreIncidents = r.topIncidents()
	page.Offenders = r.topOffenders()
	if r.compared {
		page.Compared = true
		page.Changes = r.changes[:min(len(r.changes), maxPageChanges)]
		page.MoreChanges = len(r.changes) - len(page.Changes)
		counts := map[string]int{}
		for _, c := range r.changes {
			counts[c.Rule+": "+c.Change]++
		}
		for k, n := range counts {
			page.ChangeCounts = append(page.ChangeCounts, fmt.Sprintf("%s %d", k, n))
		}
		sort.Strings(page.ChangeCounts)
	}
	return reportTemplate.Execute(w, page)
}

// rules are the rules that decided, in name order.
func (r *reportData) rules() []string {
	seen := map[string]bool{}
	var out []string
	for _, in := range r.incidents.list {
		if rule := in.first.Rule; !seen[rule] {
			seen[rule] = true
			out = append(out, rule)
		}
	}
	sort.Strings(out)
	return out
}

// topIncidents are the incidents with the most attempts, then the
// earliest, as rows; and how many more there were.
func (r *reportData) topIncidents() ([]pageIncident, int) {
	all := r.incidents.list
	order := make([]int, len(all))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		x, y := all[order[a]], all[order[b]]
		return x.peak > y.peak || x.peak == y.peak && x.first.at.Before(y.first.at)
	})
	var rows []pageIncident
	for _, i := range order[:min(len(order), maxPageIncidents)] {
		in := all[i]
		rows = append(rows, pageIncident{Rule: in.first.Rule, Key: in.first.Key, Action: in.first.Action, Attempts: in.peak,
			Renewals: in.renewals, Severity: in.severity, FirstText: stamp(in.first.at), LastText: stamp(in.last)})
	}
	return rows, len(order) - len(rows)
}

func (r *reportData) topOffenders() []reportOffender {
	var out []reportOffender
	for ip, o := range r.offenders {
		out = append(out, reportOffender{IP: ip.String(), Failures: o.failures, Usernames: len(o.users),
			First: o.first.UTC().Format(time.DateTime), Last: o.last.UTC().Format(time.DateTime)})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Failures > b.Failures || a.Failures == b.Failures && a.IP < b.IP
	})
	return out[:min(maxPageOffenders, len(out))]
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") }

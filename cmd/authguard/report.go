package main

import (
	"fmt"
	"html/template"
	"io"
	"net/netip"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/authguard/authguard/detector"
)

// reportPage is the data of a replay's post-incident review page.
type reportPage struct {
	Generated  string
	Files      []string
	Events     int
	From, To   string
	Bars       []reportBar
	ChartW     int
	ChartH     int
	Peak       int
	Offenders  []reportOffender
	Decisions  []replayDecision
	Marks      []reportMark
	RuleCounts []string
}

type reportBar struct {
	X, Y, W, H int
	Label      string
}

type reportMark struct {
	X     int
	Label string
	Class string
}

type reportOffender struct {
	IP        string
	Failures  int
	Usernames int
	First     string
	Last      string
}

var reportTemplate = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>authguard replay report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
svg{background:#fafafa;border:1px solid #ddd}
.bar{fill:#7a9cc6}.block{stroke:#c0392b;stroke-width:2}.alert{stroke:#e69b00;stroke-width:2}
.muted{color:#777}
</style></head><body>
<h1>authguard replay report</h1>
<p class="muted">Generated {{.Generated}} from {{range $i, $f := .Files}}{{if $i}}, {{end}}{{$f}}{{end}}: {{.Events}} events from {{.From}} to {{.To}} (UTC).</p>
<h2>Failed attempts per minute</h2>
<svg width="{{.ChartW}}" height="{{.ChartH}}" role="img" aria-label="failed attempts per minute">
{{range .Bars}}<rect class="bar" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}"><title>{{.Label}}</title></rect>
{{end}}{{range .Marks}}<line class="{{.Class}}" x1="{{.X}}" x2="{{.X}}" y1="0" y2="{{$.ChartH}}"><title>{{.Label}}</title></line>
{{end}}</svg>
<p class="muted">Peak {{.Peak}} per minute. Red lines: blocks; amber: alerts (hover for details).</p>
<h2>Decisions</h2>
{{if .Decisions}}<p>{{range $i, $r := .RuleCounts}}{{if $i}} · {{end}}{{$r}}{{end}}</p>
<table><tr><th>Time (UTC)</th><th>Rule</th><th>Key</th><th>Action</th><th>TTL</th><th>Severity</th><th>Count</th></tr>
{{range .Decisions}}<tr><td>{{.Time}}</td><td>{{.Rule}}</td><td>{{.Key}}</td><td>{{.Action}}{{if .Renewal}} (renewal){{end}}</td><td class="n">{{if .TTLSeconds}}{{.TTLSeconds}} s{{end}}</td><td>{{.Severity}}</td><td class="n">{{.Count}}</td></tr>
{{end}}</table>{{else}}<p>No rule fired.</p>{{end}}
<h2>Top offenders</h2>
<table><tr><th>Client IP</th><th>Failed attempts</th><th>Distinct usernames</th><th>First seen</th><th>Last seen</th></tr>
{{range .Offenders}}<tr><td>{{.IP}}</td><td class="n">{{.Failures}}</td><td class="n">{{.Usernames}}</td><td>{{.First}}</td><td>{{.Last}}</td></tr>
{{end}}</table>
</body></html>
`))

// reportData is what the review page shows, gathered as the replay goes:
// failures per minute and per address, bounded by the span and the
// addresses, not by the lines.
type reportData struct {
	files       []string
	events      int
	first, last time.Time
	perMinute   map[int64]int // failures in each minute since the epoch
	offenders   map[netip.Addr]*offender
	decisions   []replayDecision
}

type offender struct {
	failures    int
	users       map[string]bool
	first, last time.Time
}

// maxOffenderUsers bounds the usernames counted per address.
const maxOffenderUsers = 10000

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

func (r *reportData) decision(d replayDecision) { r.decisions = append(r.decisions, d) }

// write writes a self-contained HTML page for a post-incident review:
// attempts per minute over time with each decision marked, the decisions,
// and the top offenders.
func (r *reportData) write(w io.Writer, byRule map[string]int) error {
	page := reportPage{Generated: time.Now().UTC().Format(time.RFC3339), Files: r.files, Events: r.events, Decisions: r.decisions, ChartW: 1000, ChartH: 220}
	if r.events == 0 {
		return reportTemplate.Execute(w, page)
	}
	first, last := r.first.UTC(), r.last.UTC()
	page.From, page.To = first.Format(time.DateTime), last.Format(time.DateTime)
	start := first.Truncate(time.Minute)
	minutes := int(last.Sub(start)/time.Minute) + 1
	for _, n := range r.perMinute {
		page.Peak = max(page.Peak, n)
	}
	x := func(t time.Time) int {
		return int(float64(page.ChartW) * float64(t.Sub(start)) / float64(time.Duration(minutes)*time.Minute))
	}
	bw := max(page.ChartW/minutes, 1)
	for m, n := range r.perMinute {
		h := max(1, n*(page.ChartH-10)/max(page.Peak, 1))
		at := time.Unix(m*60, 0).UTC()
		page.Bars = append(page.Bars, reportBar{X: x(at), Y: page.ChartH - h, W: bw, H: h, Label: fmt.Sprintf("%s: %d", at.Format("15:04"), n)})
	}
	sort.Slice(page.Bars, func(i, j int) bool { return page.Bars[i].X < page.Bars[j].X })
	for _, d := range r.decisions {
		t, _ := time.Parse(time.RFC3339Nano, d.Time)
		class := "alert"
		if d.Action == string(detector.KindBlock) {
			class = "block"
		}
		page.Marks = append(page.Marks, reportMark{X: x(t), Class: class, Label: fmt.Sprintf("%s %s %s %s", d.Time, d.Rule, d.Key, d.Action)})
	}
	for ip, o := range r.offenders {
		page.Offenders = append(page.Offenders, reportOffender{IP: ip.String(), Failures: o.failures, Usernames: len(o.users),
			First: o.first.UTC().Format(time.DateTime), Last: o.last.UTC().Format(time.DateTime)})
	}
	sort.Slice(page.Offenders, func(i, j int) bool {
		a, b := page.Offenders[i], page.Offenders[j]
		return a.Failures > b.Failures || a.Failures == b.Failures && a.IP < b.IP
	})
	page.Offenders = page.Offenders[:min(20, len(page.Offenders))]
	for r, n := range byRule {
		page.RuleCounts = append(page.RuleCounts, fmt.Sprintf("%s: %d", r, n))
	}
	sort.Strings(page.RuleCounts)
	return reportTemplate.Execute(w, page)
}

// progress reports how far through a large file a read is, on a terminal.
type progress struct {
	r     io.Reader
	n     atomic.Int64
	total int64
	name  string
	out   io.Writer
	last  time.Time
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	done := p.n.Add(int64(n))
	if now := time.Now(); now.Sub(p.last) > 200*time.Millisecond || err == io.EOF {
		p.last = now
		fmt.Fprintf(p.out, "\rreading %s: %3d%% of %d MiB", p.name, done*100/max(p.total, 1), p.total>>20)
		if err == io.EOF {
			fmt.Fprintln(p.out)
		}
	}
	return n, err
}

// withProgress wraps f in a progress display when stderr is a terminal and
// the file is large enough to wait for.
func withProgress(f *os.File, name string, stderr io.Writer) io.Reader {
	st, err := f.Stat()
	tty, ok := stderr.(*os.File)
	if err != nil || !ok || st.Size() < 16<<20 {
		return f
	}
	if ts, err := tty.Stat(); err != nil || ts.Mode()&os.ModeCharDevice == 0 {
		return f
	}
	return &progress{r: f, total: st.Size(), name: name, out: stderr}
}

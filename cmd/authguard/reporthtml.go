package main

// reportHTML is the review page: one file, its style and its one script
// inline, nothing fetched.
const reportHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>authguard replay report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}
svg{background:#fff;border:1px solid #ddd}
.bar{fill:#7a9cc6}.bar:hover{fill:#3f6aa3}
.axis{stroke:#888;stroke-width:1}.grid{stroke:#eee;stroke-width:1}
.tick{font-size:11px;fill:#555}.lane{font-size:11px;fill:#333}
.block{fill:#c0392b}.alert{fill:#e69b00}
.muted{color:#777}.filters label{margin-right:1.2em}
</style></head><body>
<h1>authguard replay report</h1>
<p class="muted">Generated {{.Generated}} from {{range $i, $f := .Files}}{{if $i}}, {{end}}{{$f}}{{end}}: {{.Events}} events{{if .From}} from {{.From}} to {{.To}}{{end}} (UTC).</p>
{{if .Rules}}<p class="filters">Rules shown: {{range .Rules}}<label><input type="checkbox" checked data-filter="{{.}}"> {{.}}</label>{{end}}</p>{{end}}
{{with .Chart}}<h2>Failed attempts per {{.Per}}</h2>
<svg width="{{.W}}" height="{{.H}}" role="img" aria-label="failed attempts per {{.Per}}, with a marker where each incident starts">
{{range .YTicks}}<line class="grid" x1="{{$.Chart.Left}}" x2="{{$.Chart.W}}" y1="{{.At}}" y2="{{.At}}"/><text class="tick" x="{{$.Chart.Left}}" dx="-6" y="{{.At}}" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}{{range .Bars}}<rect class="bar" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}"><title>{{.Label}}</title></rect>
{{end}}<line class="axis" x1="{{.Left}}" x2="{{.W}}" y1="{{.Bottom}}" y2="{{.Bottom}}"/><line class="axis" x1="{{.Left}}" x2="{{.Left}}" y1="{{.Top}}" y2="{{.Bottom}}"/>
{{range .XTicks}}<line class="axis" x1="{{.At}}" x2="{{.At}}" y1="{{$.Chart.Bottom}}" y2="{{$.Chart.TickEnd}}"/><text class="tick" x="{{.At}}" y="{{$.Chart.Bottom}}" dy="16" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .Lanes}}<g data-rule="{{.Rule}}"><text class="lane" x="{{$.Chart.Left}}" dx="-6" y="{{.Y}}" dy="4" text-anchor="end">{{.Rule}}</text>
{{range .Marks}}<circle class="{{.Class}}" cx="{{.X}}" cy="{{.Y}}" r="4"><title>{{if gt .N 1}}{{.N}} incidents here, the first: {{end}}{{.Label}}</title></circle>
{{end}}</g>
{{end}}</svg>
<p class="muted">Bars: failed attempts per {{.Per}}. Above them, a lane per rule with a marker where each incident starts: red a block, amber an alert (hover for details).</p>{{end}}
{{if .Compared}}<h2>Changes from the baseline</h2>
{{if .Changes}}<p>{{range $i, $c := .ChangeCounts}}{{if $i}} · {{end}}{{$c}}{{end}}</p>
<table><tr><th>Change</th><th>Rule</th><th>Key</th><th>New rules</th><th>Baseline</th></tr>
{{range .Changes}}<tr data-rule="{{.Rule}}"><td>{{.Change}}</td><td>{{.Rule}}</td><td>{{.Key}}</td><td>{{.New}}</td><td>{{.Baseline}}</td></tr>
{{end}}</table>{{if .MoreChanges}}<p class="muted">{{.MoreChanges}} more changes not shown (replay -o jsonl lists them all).</p>{{end}}
{{else}}<p>No key is decided differently.</p>{{end}}{{end}}
<h2>Incidents</h2>
{{if .Incidents}}<p>Decisions: {{range $i, $r := .RuleCounts}}{{if $i}} · {{end}}{{$r}}{{end}}</p>
<table><tr><th>Key</th><th>Rule</th><th>Action</th><th>First (UTC)</th><th>Last (UTC)</th><th>Attempts</th><th>Renewals</th><th>Peak severity</th></tr>
{{range .Incidents}}<tr data-rule="{{.Rule}}"><td>{{.Key}}</td><td>{{.Rule}}</td><td>{{.Action}}</td><td>{{.FirstText}}</td><td>{{.LastText}}</td><td class="n">{{.Attempts}}</td><td class="n">{{.Renewals}}</td><td>{{.Severity}}</td></tr>
{{end}}</table>{{if .MoreIncidents}}<p class="muted">{{.MoreIncidents}} more incidents, with fewer attempts, not shown (replay -o jsonl lists every decision).</p>{{end}}
{{else}}<p>No rule fired.</p>{{end}}
<h2>Top offenders</h2>
<table><tr><th>Client IP</th><th>Failed attempts</th><th>Distinct usernames</th><th>First seen</th><th>Last seen</th></tr>
{{range .Offenders}}<tr><td>{{.IP}}</td><td class="n">{{.Failures}}</td><td class="n">{{.Usernames}}</td><td>{{.First}}</td><td>{{.Last}}</td></tr>
{{end}}</table>
<script>
for (const box of document.querySelectorAll("input[data-filter]")) {
  box.addEventListener("change", () => {
    for (const el of document.querySelectorAll("[data-rule]")) {
      if (el.dataset.rule === box.dataset.filter) el.style.display = box.checked ? "" : "none";
    }
  });
}
</script>
</body></html>
`

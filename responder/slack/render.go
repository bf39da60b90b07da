package slack

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/clip"
)

// Button action IDs, as Slack sends them back in interaction payloads.
const (
	ActionUnblock = "authguard_unblock"
	ActionExtend  = "authguard_extend"
)

// ExtendBy is how much longer the Extend button blocks an IP.
const ExtendBy = 24 * time.Hour

// Page is what a page shows beyond the action itself.
type Page struct {
	// Samples are up to three matching log lines, newest last.
	Samples []string
	// Status is a line on what people did since (an unblock, an extension).
	Status string
	// Buttons adds Unblock and Extend to a page about a standing block.
	Buttons bool
	// MaskUsernames hides usernames in the sample lines.
	MaskUsernames bool
	// Explore links the Loki query in Grafana Explore, when set.
	Explore *Explore
	// PerMinute are the incident's attempts minute by minute, oldest
	// first, drawn as a sparkline.
	PerMinute []int
}

// Explore says how to link an incident's lines in Grafana Explore.
type Explore struct {
	// URL is Grafana's base URL, e.g. https://grafana.example.com.
	URL string
	// Datasource is the Loki data source's UID.
	Datasource string
	// Selector is the stream selector of the audit lines, e.g.
	// {service="audit"}.
	Selector string
}

// Message is a rendered page.
type Message struct {
	// Text is the notification text: it names severity, type, IP, count and
	// action, so the page says what happened where blocks are not shown.
	Text       string
	Attachment slack.Attachment
	title      string
	fields     [][2]string
}

// colour by severity rank, whatever the levels are called: the most severe
// level red (P1 in the playbook's scale), the next amber, others grey, as
// is a page without a severity.
func colour(severity string, rank int) string {
	switch {
	case severity == "":
	case rank == 0:
		return "danger"
	case rank == 1:
		return "warning"
	}
	return "#9e9e9e"
}

// IncidentType names the kind of abuse in the playbook's words.
func IncidentType(d detector.Decision) string {
	switch {
	case d.Accounts != nil:
		return "Possible account takeover" // a login that worked from a guessing address
	case d.Key == "":
		return "Failed-login surge"
	case d.GroupBy == "username":
		return "Targeted account" // one account, many addresses
	case d.GroupBy == "session_id":
		return "Session used from many addresses" // a stolen session
	case d.GroupBy == "api_key":
		return "API key abuse"
	case d.GroupBy != "":
		return "Abuse of one " + d.GroupBy
	case d.Distinct > 0 && d.Match == "":
		return "Credential stuffing" // both outcomes counted: logins that work among many accounts
	case d.Distinct > 0:
		return "Account enumeration"
	}
	return "Brute force"
}

// Render builds the page for an action.
func Render(a responder.Action, p Page) Message {
	d := a.Decision
	title := d.Severity + " — " + IncidentType(d)
	if d.Escalation && d.Accounts == nil {
		title += " (escalated)"
	}
	action := actionText(a)
	fields, who, attempts := facts(a, p, action)
	m := Message{title: title, fields: fields}
	m.Text = fmt.Sprintf("%s: %s from %s, %d %s; %s", title, d.Rule, who, d.Count, strings.ToLower(attempts), action)

	var sf []*slack.TextBlockObject
	for _, f := range fields {
		sf = append(sf, slack.NewTextBlockObject(slack.MarkdownType, "*"+f[0]+"*\n"+f[1], false, false))
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, title, false, false)),
		// A section holds at most ten fields.
		slack.NewSectionBlock(nil, sf[:min(len(sf), 10)], nil),
	}
	if len(p.Samples) > 0 {
		var lines []string
		for _, s := range p.Samples[max(0, len(p.Samples)-3):] {
			if p.MaskUsernames {
				s = MaskUsernames(s)
			}
			lines = append(lines, clip.Marked(s, 900))
		}
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "```"+strings.Join(lines, "\n")+"```", false, false), nil, nil))
	}
	var links []slack.MixedElement
	if p.Explore != nil && d.Key != "" {
		links = append(links, slack.NewTextBlockObject(slack.MarkdownType, "<"+p.Explore.link(d)+"|Lines in Grafana Explore>", false, false))
	}
	if p.Status != "" {
		links = append(links, slack.NewTextBlockObject(slack.MarkdownType, p.Status, false, false))
	}
	if len(links) > 0 {
		blocks = append(blocks, slack.NewContextBlock("", links...))
	}
	if p.Buttons && a.Blocked() && d.Net.IsValid() {
		target := blockset.Target(d.Net)
		unblock := slack.NewButtonBlockElement(ActionUnblock, target, slack.NewTextBlockObject(slack.PlainTextType, "Unblock", false, false))
		unblock.Style = slack.StyleDanger
		unblock.Confirm = slack.NewConfirmationBlockObject(
			slack.NewTextBlockObject(slack.PlainTextType, "Unblock "+target+"?", false, false),
			slack.NewTextBlockObject(slack.MarkdownType, "Deletes `ip_block` and `login_fail` for "+target+": a clean slate.", false, false),
			slack.NewTextBlockObject(slack.PlainTextType, "Unblock", false, false),
			slack.NewTextBlockObject(slack.PlainTextType, "Cancel", false, false))
		extend := slack.NewButtonBlockElement(ActionExtend, target, slack.NewTextBlockObject(slack.PlainTextType, "Extend 24 h", false, false))
		blocks = append(blocks, slack.NewActionBlock("authguard_actions", unblock, extend))
	}
	// The blocks ride in an attachment for the colour bar; Fallback is
	// what clients without blocks show.
	m.Attachment = slack.Attachment{Color: colour(d.Severity, d.SeverityRank), Fallback: m.Text, Blocks: slack.Blocks{BlockSet: blocks}}
	return m
}

// facts are the page's fields, whom it is about and what it counted.
func facts(a responder.Action, p Page, action string) (fields [][2]string, who, attempts string) {
	d := a.Decision
	who = d.Key
	if who == "" {
		who = "all clients"
	}
	attempts = "Failed attempts"
	if d.Match != detector.ActionAuthFailed {
		attempts = "Attempts"
	}
	fields = [][2]string{{"IP", who}}
	if d.Accounts != nil {
		fields = append(fields, [2]string{"Accounts logged into", strings.Join(d.Accounts, ", ")}, [2]string{"Why suspect", d.Suspect})
		attempts = "Accounts"
	}
	if d.GroupBy != "" {
		fields = [][2]string{{d.GroupBy, who}, {"Addresses", addressList(d.Sources, 20)}}
		who = d.GroupBy + " " + who
	}
	fields = append(fields, [][2]string{
		{attempts, strconv.Itoa(d.Count)},
		{"Rate", strconv.FormatFloat(d.RatePerMinute, 'f', 1, 64) + "/min"},
	}...)
	if d.Distinct > 0 {
		fields = append(fields, [2]string{"Distinct " + detector.Plural(d.DistinctOf), strconv.Itoa(d.Distinct)})
	}
	if len(p.PerMinute) > 0 {
		fields = append(fields, [2]string{"Attempts per minute", Sparkline(p.PerMinute)})
	}
	fields = append(fields, [][2]string{
		{"First seen", detector.FormatTime(d.FirstSeen)},
		{"Last seen", detector.FormatTime(d.LastSeen)},
		{"Action", action},
		{"Rule", d.Rule + ": " + d.Trigger()},
	}...)
	if a.Incident != "" {
		fields = append(fields, [2]string{"Incident", "`authguard incidents show " + a.Incident + "`"})
	}
	return fields, who, attempts
}

func actionText(a responder.Action) string {
	d := a.Decision
	switch {
	case a.Blocked():
		s := "blocked for " + detector.FormatDuration(d.TTL) + ", until " + detector.FormatTime(a.Expires)
		if d.Offence > 1 {
			s += fmt.Sprintf(" (offence %d, escalated)", d.Offence)
		}
		return s
	case a.Act == responder.ActDryRun:
		return "DRY RUN: would block for " + detector.FormatDuration(d.TTL)
	case a.Act == responder.ActRefuse:
		return "not blocked: the address is in --never-block"
	}
	var acts []string
	if d.GroupBy != "" && d.TTL > 0 {
		acts = append(acts, "its addresses blocked for "+detector.FormatDuration(d.TTL))
	}
	if d.Protects > 0 {
		acts = append(acts, "the account protected for "+detector.FormatDuration(d.Protects)+" (logins only from its known addresses)")
	}
	switch {
	case len(acts) == 0:
		return "alert only"
	case d.DryRun:
		return "DRY RUN: would have " + strings.Join(acts, "; ")
	}
	return strings.Join(acts, "; ")
}

// addressList writes at most n addresses, saying how many more there are.
func addressList(as []netip.Addr, n int) string {
	var parts []string
	for _, a := range as[:min(len(as), n)] {
		parts = append(parts, a.String())
	}
	s := strings.Join(parts, ", ")
	if len(as) > n {
		s += fmt.Sprintf(" and %d more", len(as)-n)
	}
	return s
}

// Sparkline draws counts as bars, scaled to the largest, with the peak
// and the span: "▁▃█▆ peak 137 over 4 min".
func Sparkline(counts []int) string {
	const bars = "▁▂▃▄▅▆▇█"
	peak := 0
	for _, c := range counts {
		peak = max(peak, c)
	}
	var b strings.Builder
	b.WriteString("`")
	for _, c := range counts {
		i := 0
		if peak > 0 && c > 0 {
			i = 1 + (c*7-1)/peak // 1..7 for any attempt, 7 at the peak
		}
		b.WriteString(string([]rune(bars)[i]))
	}
	b.WriteString("` peak " + strconv.Itoa(peak) + " over " + strconv.Itoa(len(counts)) + " min")
	return b.String()
}

// Terminal renders the page as text for a terminal.
func (m Message) Terminal() string {
	var b strings.Builder
	line := strings.Repeat("─", 64)
	fmt.Fprintf(&b, "┌%s\n│ 🚨 %s\n├%s\n", line, m.title, line)
	for _, f := range m.fields {
		fmt.Fprintf(&b, "│ %-21s %s\n", f[0]+":", f[1])
	}
	fmt.Fprintf(&b, "└%s\n", line)
	return b.String()
}

// Summary is one coalesced page: many incidents of one rule in a burst.
type Summary struct {
	Rule         string
	Severity     string // the highest among them
	SeverityRank int    // its rank, 0 the most severe
	// Keys counts the IPs (or prefixes) in the burst.
	Keys int
	// Blocked counts those blocked.
	Blocked int
	// Span is from the first incident's start to the latest's.
	Span time.Duration
	// Top are the offenders with the most attempts, most first.
	Top []responder.Action
}

// RenderSummary builds the page for a burst of incidents.
func RenderSummary(s Summary) Message {
	verb := "flagged"
	if s.Blocked > 0 {
		verb = "blocked"
	}
	headline := fmt.Sprintf("%d IPs %s by %s in %s", s.Keys, verb, s.Rule, detector.FormatDuration(s.Span.Round(time.Second)))
	title := s.Severity + " — " + headline
	var top []string
	for _, a := range s.Top {
		top = append(top, fmt.Sprintf("`%s` %d attempts (%s)", a.Decision.Key, a.Decision.Count, a.Decision.Severity))
	}
	fields := [][2]string{{"Rule", s.Rule}, {"IPs", strconv.Itoa(s.Keys)}, {"Blocked", strconv.Itoa(s.Blocked)}}
	m := Message{title: title, fields: fields, Text: title}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, clip.Marked(title, 150), false, false)),
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*Top offenders*\n"+strings.Join(top, "\n"), false, false), nil, nil),
		slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, "Each is recorded as evidence; `authguard blocks list` shows them all.", false, false)),
	}
	m.Attachment = slack.Attachment{Color: colour(s.Severity, s.SeverityRank), Fallback: title, Blocks: slack.Blocks{BlockSet: blocks}}
	return m
}

var usernameField = regexp.MustCompile(`("username"\s*:\s*")((?:[^"\\]|\\.)*)(")`)

// MaskUsernames keeps the first character of each username in a JSON line
// and hides the rest.
func MaskUsernames(line string) string {
	return usernameField.ReplaceAllStringFunc(line, func(m string) string {
		p := usernameField.FindStringSubmatch(m)
		name := p[2]
		shown := ""
		if name != "" {
			shown = name[:1]
		}
		return p[1] + shown + "***" + p[3]
	})
}

// link is the Explore URL for the decision's key over its span, give or take
// five minutes.
func (e *Explore) link(d detector.Decision) string {
	expr := e.Selector + ` | json | client_ip="` + d.Key + `"`
	if strings.Contains(d.Key, "/") {
		expr = e.Selector + ` | json | client_ip=ip("` + d.Key + `")`
	}
	pane := map[string]any{"a": map[string]any{
		"datasource": e.Datasource,
		"queries":    []any{map[string]any{"refId": "A", "expr": expr, "datasource": map[string]string{"type": "loki", "uid": e.Datasource}}},
		"range": map[string]string{
			"from": strconv.FormatInt(d.FirstSeen.Add(-5*time.Minute).UnixMilli(), 10),
			"to":   strconv.FormatInt(d.LastSeen.Add(5*time.Minute).UnixMilli(), 10),
		},
	}}
	b, _ := json.Marshal(pane)
	return strings.TrimSuffix(e.URL, "/") + "/explore?schemaVersion=1&panes=" + url.QueryEscape(string(b))
}

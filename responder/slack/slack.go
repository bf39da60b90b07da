// Package slack pages the on-call team about authguard's actions: a Slack
// message per incident through the Web API (bot token) or an incoming
// webhook, coloured by severity; without either, the page is written to a
// terminal so that a demo or a dry run shows what Slack would get.
package slack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
)

// Options configure the notifier. Set Token and Channel for bot-token mode,
// or WebhookURL; with neither, pages go to Terminal.
type Options struct {
	Token      string
	Channel    string
	WebhookURL string
	// APIURL overrides Slack's API base URL (for slacktest).
	APIURL string
	// Terminal receives pages when no Slack destination is configured.
	Terminal io.Writer
}

// Notifier sends pages.
type Notifier struct {
	opts Options
	api  *slack.Client
	mu   sync.Mutex // serialises terminal output
}

// New returns a notifier, or an error when the options are inconsistent.
func New(opts Options) (*Notifier, error) {
	n := &Notifier{opts: opts}
	switch {
	case opts.Token != "":
		if opts.Channel == "" {
			return nil, errors.New("slack: a bot token needs a channel")
		}
		var o []slack.Option
		if opts.APIURL != "" {
			o = append(o, slack.OptionAPIURL(opts.APIURL))
		}
		n.api = slack.New(opts.Token, o...)
	case opts.WebhookURL != "":
	case opts.Terminal == nil:
		return nil, errors.New("slack: no token, webhook or terminal to page")
	}
	return n, nil
}

// rateLimited carries Slack's Retry-After to the responder's retry loop.
type rateLimited struct{ err *slack.RateLimitedError }

func (r rateLimited) Error() string             { return r.err.Error() }
func (r rateLimited) RetryAfter() time.Duration { return r.err.RetryAfter }

// Notify sends one page.
func (n *Notifier) Notify(ctx context.Context, a responder.Action) error {
	m := Render(a)
	var err error
	switch {
	case n.api != nil:
		_, _, err = n.api.PostMessageContext(ctx, n.opts.Channel,
			slack.MsgOptionText(m.Text, false), slack.MsgOptionAttachments(m.Attachment))
	case n.opts.WebhookURL != "":
		err = slack.PostWebhookContext(ctx, n.opts.WebhookURL, &slack.WebhookMessage{Text: m.Text, Attachments: []slack.Attachment{m.Attachment}})
	default:
		n.mu.Lock()
		_, err = io.WriteString(n.opts.Terminal, m.Terminal())
		n.mu.Unlock()
	}
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return rateLimited{rl}
	}
	if err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	return nil
}

// Message is a rendered page.
type Message struct {
	// Text is the notification text: it names severity, rule, IP, count and
	// expiry, so the page says what happened even where attachments are not shown.
	Text       string
	Attachment slack.Attachment
	title      string
	fields     [][2]string
}

// Colour by severity: P1 red, P2 amber, anything else neutral grey.
func colour(sev string) string {
	switch sev {
	case "P1":
		return "danger"
	case "P2":
		return "warning"
	}
	return "#9e9e9e"
}

const utc = "2006-01-02 15:04:05 UTC"

// Render builds the page for an action.
func Render(a responder.Action) Message {
	d := a.Decision
	kind := humanize(d.Rule)
	title := fmt.Sprintf("%s — %s", d.Severity, kind)
	if d.Escalation {
		title = fmt.Sprintf("%s — %s (escalated)", d.Severity, kind)
	}
	who := d.Key
	if who == "" {
		who = "all clients"
	}
	action := "alert only"
	switch {
	case a.Blocked:
		action = fmt.Sprintf("blocked for %s, until %s", detector.FormatDuration(d.TTL), a.Expires.UTC().Format(utc))
		if d.Offence > 1 {
			action += fmt.Sprintf(" (offence %d, escalated)", d.Offence)
		}
	case a.What == "dry-run":
		action = fmt.Sprintf("DRY RUN: would block for %s", detector.FormatDuration(d.TTL))
	case a.What == "refused":
		action = "not blocked: the address is in --never-block"
	}
	fields := [][2]string{
		{"IP", who},
		{"Rule", d.Rule},
		{"Failed attempts", fmt.Sprintf("%d (%.1f/min)", d.Count, d.RatePerMinute)},
	}
	if d.Distinct > 0 {
		fields = append(fields, [2]string{"Distinct usernames", fmt.Sprint(d.Distinct)})
	}
	fields = append(fields, [][2]string{
		{"Trigger", d.Trigger()},
		{"First seen", d.FirstSeen.UTC().Format(utc)},
		{"Last seen", d.LastSeen.UTC().Format(utc)},
		{"Action", action},
	}...)
	if a.Incident != "" {
		fields = append(fields, [2]string{"Incident", a.Incident + " (authguard incidents show " + a.Incident + ")"})
	}
	m := Message{title: title, fields: fields}
	m.Text = fmt.Sprintf("%s: %s from %s, %d failed attempts; %s", title, d.Rule, who, d.Count, action)
	var sf []*slack.TextBlockObject
	var af []slack.AttachmentField
	for _, f := range fields {
		sf = append(sf, slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("*%s*\n%s", f[0], f[1]), false, false))
		af = append(af, slack.AttachmentField{Title: f[0], Value: f[1], Short: f[0] != "Trigger" && f[0] != "Action" && f[0] != "Incident"})
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, title, false, false)),
		slack.NewSectionBlock(nil, sf, nil),
	}
	if d.Sample != "" {
		blocks = append(blocks, slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, "```"+truncate(d.Sample, 500)+"```", false, false)))
	}
	m.Attachment = slack.Attachment{Color: colour(d.Severity), Fallback: m.Text, Fields: af, Blocks: slack.Blocks{BlockSet: blocks}}
	return m
}

// Terminal renders the page as text for a terminal.
func (m Message) Terminal() string {
	var b strings.Builder
	line := strings.Repeat("─", 64)
	fmt.Fprintf(&b, "┌%s\n│ 🚨 %s\n├%s\n", line, m.title, line)
	for _, f := range m.fields {
		fmt.Fprintf(&b, "│ %-16s %s\n", f[0]+":", f[1])
	}
	fmt.Fprintf(&b, "└%s\n", line)
	return b.String()
}

func humanize(rule string) string {
	s := strings.ReplaceAll(rule, "-", " ")
	s = strings.ReplaceAll(s, "_", " ")
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

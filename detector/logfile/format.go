package logfile

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder/clip"
)

// SkipNoMatch is the skip reason of a line --format does not match.
const SkipNoMatch = "no_match"

// Format reads plain-text logs (sshd, nginx, an application's own lines)
// with a regular expression whose named groups name the fields:
// client_ip (required; fail2ban's <HOST> stands for it) and ts (required:
// replay decides in event time), and optionally username and success. A
// line it matches is a failed login, or a login that worked when its
// success group matched text; a line it does not match is skipped.
type Format struct {
	re                *regexp.Regexp
	ip, user, success int
	ts                int
	layout            string
	year              int
}

// hostPattern is what <HOST> stands for: an IPv4 or IPv6 address, perhaps
// bracketed, as fail2ban's <HOST> takes one.
const hostPattern = `(?P<client_ip>\[?[0-9A-Fa-f:.]+\]?)`

// NewFormat compiles a --format expression. layout is the Go time layout
// of its ts group (RFC 3339 when empty); a layout without a year (syslog's
// "Jan _2 15:04:05") takes year.
func NewFormat(expr, layout string, year int) (*Format, error) {
	expr = strings.ReplaceAll(expr, "<HOST>", hostPattern)
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("--format: %w", err)
	}
	f := &Format{re: re, ip: re.SubexpIndex("client_ip"), user: re.SubexpIndex("username"), success: re.SubexpIndex("success"),
		ts: re.SubexpIndex("ts"), layout: layout, year: year}
	if f.ip < 0 {
		return nil, fmt.Errorf("--format %q: name the client address with (?P<client_ip>...) or <HOST>", expr)
	}
	if f.ts < 0 {
		return nil, fmt.Errorf("--format %q: name the time with (?P<ts>...): replay decides in event time", expr)
	}
	if f.layout == "" {
		f.layout = time.RFC3339Nano
	}
	return f, nil
}

// Parse reads one line.
func (f *Format) Parse(text string) (detector.Event, error) {
	m := f.re.FindStringSubmatch(text)
	if m == nil {
		return detector.Event{}, &loki.SkipError{Reason: SkipNoMatch, Detail: "--format does not match " + clip.Marked(text, 80)}
	}
	ip, ok := loki.ParseClientAddr(strings.Trim(m[f.ip], "[]"))
	if !ok {
		return detector.Event{}, &loki.SkipError{Reason: loki.SkipBadClientIP, Detail: "client address " + clip.String(m[f.ip], 64) + " is not an IP"}
	}
	t, err := time.Parse(f.layout, m[f.ts])
	if err != nil {
		return detector.Event{}, &loki.SkipError{Reason: loki.SkipBadTime, Detail: "time " + clip.String(m[f.ts], 64) + " is not " + f.layout}
	}
	if t.Year() == 0 {
		t = t.AddDate(f.year, 0, 0)
	}
	ev := detector.Event{Time: t.UTC(), Action: detector.ActionAuthFailed, IP: ip, Line: clip.String(text, loki.DefaultMaxLineBytes)}
	if f.user >= 0 {
		ev.Username = clip.String(m[f.user], 256)
	}
	if f.success >= 0 && m[f.success] != "" {
		ev.Action = detector.ActionAuthSucceeded
	}
	return ev, nil
}

// Package loki is authguard's Loki source: it tails Loki over the websocket
// API, turns audit lines into detector events, and reconnects after any
// close or error.
package loki

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/authguard/authguard/detector"
)

// Fields names the JSON fields of an audit line.
type Fields struct {
	Action   string
	ClientIP string
	Username string
	Time     string
}

// DefaultFields are the audit event's field names in DESIGN.md.
var DefaultFields = Fields{Action: "action", ClientIP: "client_ip", Username: "username", Time: "ts"}

// Parser turns audit lines into events. Its zero value is not usable; use
// NewParser.
type Parser struct {
	fields      Fields
	maxLine     int
	useLineTime bool
}

// Limits on attacker-influenced input.
const (
	DefaultMaxLineBytes = 16 << 10
	maxUsernameBytes    = 256
)

// NewParser returns a parser for lines with the given field names. Lines
// longer than maxLine bytes are skipped (DefaultMaxLineBytes when zero).
// With useLineTime the line's own time field is the event time instead of
// the Loki entry timestamp.
func NewParser(f Fields, maxLine int, useLineTime bool) *Parser {
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	return &Parser{fields: f, maxLine: maxLine, useLineTime: useLineTime}
}

// SkipError says why a line was skipped; Reason is a short metric label.
type SkipError struct {
	Reason string
	Detail string
}

func (e *SkipError) Error() string { return e.Reason + ": " + e.Detail }

// Skip reasons, used as metric labels.
const (
	SkipTooLong     = "too_long"
	SkipNotJSON     = "not_json"
	SkipNoAction    = "no_action"
	SkipNoClientIP  = "no_client_ip"
	SkipBadClientIP = "bad_client_ip"
	SkipBadTime     = "bad_time"
)

// Parse turns one line with its entry timestamp into an event, or returns a
// *SkipError.
func (p *Parser) Parse(ts time.Time, line string) (detector.Event, error) {
	if len(line) > p.maxLine {
		return detector.Event{}, &SkipError{SkipTooLong, "line of " + strconv.Itoa(len(line)) + " bytes"}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil || obj == nil {
		return detector.Event{}, &SkipError{SkipNotJSON, "line is not a JSON object"}
	}
	action, ok := str(obj[p.fields.Action])
	if !ok || action == "" {
		return detector.Event{}, &SkipError{SkipNoAction, "no " + p.fields.Action + " field"}
	}
	ipText, ok := str(obj[p.fields.ClientIP])
	if !ok || ipText == "" {
		return detector.Event{}, &SkipError{SkipNoClientIP, "no " + p.fields.ClientIP + " field"}
	}
	ip, err := netip.ParseAddr(ipText)
	if err != nil || ip.Zone() != "" {
		return detector.Event{}, &SkipError{SkipBadClientIP, "client address " + truncate(ipText, 64) + " is not an IP"}
	}
	ev := detector.Event{Time: ts, Action: truncate(action, 64), IP: ip.Unmap(), Line: line}
	if u, ok := str(obj[p.fields.Username]); ok {
		ev.Username = truncate(u, maxUsernameBytes)
	}
	if p.useLineTime {
		raw, _ := str(obj[p.fields.Time])
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			return detector.Event{}, &SkipError{SkipBadTime, "time field " + truncate(raw, 64) + " is not RFC 3339"}
		}
		ev.Time = t
	}
	return ev, nil
}

func str(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// truncate cuts s to at most n bytes, dropping a UTF-8 sequence cut in two.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// IsSkip reports whether err is a *SkipError and returns it.
func IsSkip(err error) (*SkipError, bool) {
	var se *SkipError
	ok := errors.As(err, &se)
	return se, ok
}

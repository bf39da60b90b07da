package loki

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/auditsig"
)

func TestParseAuditLines(t *testing.T) {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	p := NewParser(DefaultFields, 200, 400, false)
	tests := []struct {
		name, line, skip, ip, user string
	}{
		{"a complete audit line", `{"action":"auth_failed","client_ip":"203.0.113.7","username":"alice"}`, "", "203.0.113.7", "alice"},
		{"an IPv4-mapped address is unmapped", `{"action":"auth_failed","client_ip":"::ffff:203.0.113.7"}`, "", "203.0.113.7", ""},
		{"IPv6", `{"action":"auth_failed","client_ip":"2001:db8::1"}`, "", "2001:db8::1", ""},
		{"IPv4-compatible IPv6 is the IPv4 address", `{"action":"auth_failed","client_ip":"::203.0.113.7"}`, "", "203.0.113.7", ""},
		{"upper-case, zero-padded IPv6 is one address", `{"action":"auth_failed","client_ip":"2001:0DB8:0000::0001"}`, "", "2001:db8::1", ""},
		{"zero-padded IPv4 octets are decimal", `{"action":"auth_failed","client_ip":"203.000.113.007"}`, "", "203.0.113.7", ""},
		{"a port is dropped", `{"action":"auth_failed","client_ip":"203.0.113.7:5000"}`, "", "203.0.113.7", ""},
		{"brackets and a port are dropped", `{"action":"auth_failed","client_ip":"[2001:db8::1]:443"}`, "", "2001:db8::1", ""},
		{"brackets alone are dropped", `{"action":"auth_failed","client_ip":"[::ffff:203.0.113.7]"}`, "", "203.0.113.7", ""},
		{"the loopback address stays IPv6", `{"action":"auth_failed","client_ip":"::1"}`, "", "::1", ""},
		{"an octet over 255 is not an address", `{"action":"auth_failed","client_ip":"203.0.113.256"}`, SkipBadClientIP, "", ""},
		{"not JSON", `level=info msg="auth failed"`, SkipNotJSON, "", ""},
		{"a JSON array", `[1,2]`, SkipNotJSON, "", ""},
		{"no client_ip", `{"action":"auth_failed"}`, SkipNoClientIP, "", ""},
		{"client_ip not a string", `{"action":"auth_failed","client_ip":12}`, SkipNoClientIP, "", ""},
		{"client_ip not an address", `{"action":"auth_failed","client_ip":"not-an-ip"}`, SkipBadClientIP, "", ""},
		{"a zone is not a client", `{"action":"auth_failed","client_ip":"fe80::1%eth0"}`, SkipBadClientIP, "", ""},
		{"no action", `{"client_ip":"203.0.113.7"}`, SkipNoAction, "", ""},
		{"a line longer than the excerpt is read whole", `{"user_agent":"` + strings.Repeat("a", 300) + `","action":"auth_failed","client_ip":"203.0.113.7"}`, "", "203.0.113.7", ""},
		{"a line over the hard limit", `{"action":"auth_failed","client_ip":"203.0.113.7","username":"` + strings.Repeat("a", 400) + `"}`, SkipTooLong, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := p.Parse(ts, tt.line)
			if tt.skip != "" {
				se, ok := IsSkip(err)
				if !ok || se.Reason != tt.skip {
					t.Fatalf("err = %v, want skip %s", err, tt.skip)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.IP.String() != tt.ip || ev.Username != tt.user || !ev.Time.Equal(ts) || ev.Action != "auth_failed" {
				t.Errorf("event %+v", ev)
			}
		})
	}
}

// A line past the excerpt bound counts, keeps an excerpt of its own (not
// the long line), and one past the hard limit is skipped naming its
// client.
func TestLongLinesCountAndKeepABoundedExcerpt(t *testing.T) {
	p := NewParser(DefaultFields, 64, 1<<20, false)
	line := `{"user_agent":"` + strings.Repeat(`\"x`, 8<<10) + `","action":"auth_failed","client_ip":"203.0.113.7","username":"alice"}`
	ev, err := p.Parse(time.Now(), line)
	if err != nil || ev.IP.String() != "203.0.113.7" || ev.Username != "alice" || len(ev.Line) > 64 {
		t.Fatalf("a %d-byte line: event %+v (line of %d), %v", len(line), ev, len(ev.Line), err)
	}
	huge := `{"action":"auth_failed","client_ip":"203.0.113.8","user_agent":"` + strings.Repeat("y", 1<<20) + `"}`
	_, err = p.Parse(time.Now(), huge)
	if se, ok := IsSkip(err); !ok || se.Reason != SkipTooLong || !strings.Contains(se.Detail, "from client_ip 203.0.113.8") {
		t.Errorf("a line over the hard limit: %v", err)
	}
}

func TestLongUsernamesAreBounded(t *testing.T) {
	p := NewParser(DefaultFields, 0, 0, false)
	ev, err := p.Parse(time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.1","username":"`+strings.Repeat("é", 1000)+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Username) > maxUsernameBytes || !strings.HasPrefix(ev.Username, "éé") {
		t.Errorf("username of %d bytes", len(ev.Username))
	}
}

func TestLineTimeWhenConfigured(t *testing.T) {
	p := NewParser(DefaultFields, 0, 0, true)
	ev, err := p.Parse(time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.1","ts":"2026-11-22T10:00:04Z"}`)
	if err != nil || !ev.Time.Equal(time.Date(2026, 11, 22, 10, 0, 4, 0, time.UTC)) {
		t.Fatalf("event %+v, err %v", ev, err)
	}
	if _, err := p.Parse(time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.1","ts":"yesterday"}`); err == nil {
		t.Fatal("a bad ts was accepted")
	}
}

// With a verifier, only lines signed with one of its keys count; the
// others are skipped by reason.
func TestSignedLinesOnlyWhenVerifying(t *testing.T) {
	key, _ := auditsig.NewKey([]byte("the gateway's audit key"))
	other, _ := auditsig.NewKey([]byte("somebody else's key...."))
	p := NewParser(DefaultFields, 0, 0, false).Verify(auditsig.NewVerifier(key))
	entry := time.Date(2026, 11, 22, 10, 0, 0, 5, time.UTC)
	line := func(k *auditsig.Key, ip, ts string) string {
		f := auditsig.Fields{TS: ts, Action: "auth_failed", ClientIP: ip, Username: "alice", RequestID: "r1"}
		sig := ""
		if k != nil {
			sig = k.Sign(f)
		}
		return fmt.Sprintf(`{"ts":%q,"action":"auth_failed","client_ip":%q,"username":"alice","request_id":"r1","sig":%q}`, ts, ip, sig)
	}
	now := "2026-11-22T10:00:00.000000001Z"
	signed := line(&key, "203.0.113.7", now)
	if ev, err := p.Parse(entry, signed); err != nil || ev.IP.String() != "203.0.113.7" {
		t.Fatalf("a signed line: %+v %v", ev, err)
	}
	for _, tt := range []struct{ name, line, reason string }{
		{"unsigned", line(nil, "203.0.113.7", now), SkipSigUnsigned},
		{"signed with another key", line(&other, "203.0.113.7", now), SkipSigUnknown},
		{"another address under a real signature", strings.Replace(signed, "203.0.113.7", "198.51.100.1", 1), SkipSigBad},
		{"a signed line copied in an hour later", line(&key, "203.0.113.7", "2026-11-22T09:00:00Z"), SkipSigReplayed},
	} {
		_, err := p.Parse(entry, tt.line)
		if se, ok := IsSkip(err); !ok || se.Reason != tt.reason {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.reason)
		}
	}
}

// The fields rules group by or count are read into the event, bounded;
// others are not kept, and a repeated key counts as its first.
func TestTheFieldsRulesNameAreRead(t *testing.T) {
	p := NewParser(DefaultFields.WithAttrs("session_id", "api_key", "username", "session_id"), 0, 0, false)
	line := `{"action":"auth_succeeded","client_ip":"192.0.2.1","session_id":"s-1","api_key":"` + strings.Repeat("k", 1000) +
		`","session_id":"s-2","user_agent":"curl","tenant":{"id":1}}`
	ev, err := p.Parse(time.Now(), line)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.Field("session_id"); got != "s-1" {
		t.Errorf("session_id %q, want the first of the repeated keys", got)
	}
	if got := ev.Field("api_key"); len(got) != maxAttrBytes {
		t.Errorf("api_key of %d bytes, want it cut to %d", len(got), maxAttrBytes)
	}
	if got := ev.Field("user_agent"); got != "" || len(ev.Attrs) != 2 {
		t.Errorf("a field not asked for was read: %+v", ev.Attrs)
	}
	plain, _ := NewParser(DefaultFields, 0, 0, false).Parse(time.Now(), line)
	if plain.Attrs != nil {
		t.Errorf("a parser asked for no fields read %+v", plain.Attrs)
	}
}

// A logcli jsonl entry gives its timestamp and line, escapes undone,
// whatever its labels hold; anything else is not an entry.
func TestLogcliEntriesAreRead(t *testing.T) {
	for _, tt := range []struct {
		text, ts, line string
		ok             bool
	}{
		{`{"labels":{"service":"audit","client_ip":"203.0.113.7"},"line":"{\"action\":\"auth_failed\",\"client_ip\":\"203.0.113.7\"}","timestamp":"2026-11-22T10:00:00Z"}`,
			"2026-11-22T10:00:00Z", `{"action":"auth_failed","client_ip":"203.0.113.7"}`, true},
		{`{"timestamp":"2026-11-22T10:00:00.5Z","line":"caf\u00e9 \"x\"","labels":{"a":{"nested":[1,2]}}}`, "2026-11-22T10:00:00.5Z", `café "x"`, true},
		{`{"action":"auth_failed","client_ip":"203.0.113.7","ts":"2026-11-22T10:00:00Z"}`, "", "", false},
		{`{"line":"x"}`, "", "", false},
		{`{"line":"x","timestamp":"t"`, "", "", false},
		{`not json`, "", "", false},
	} {
		ts, line, ok := LogcliEntry(tt.text)
		if ok != tt.ok || ok && (ts != tt.ts || line != tt.line) {
			t.Errorf("%s: %q %q %v", tt.text, ts, line, ok)
		}
	}
}

package loki

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki/lokitest"
)

func TestParseAuditLines(t *testing.T) {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	p := NewParser(DefaultFields, 200, false)
	tests := []struct {
		name, line, skip, ip, user string
	}{
		{"a complete audit line", `{"action":"auth_failed","client_ip":"203.0.113.7","username":"alice"}`, "", "203.0.113.7", "alice"},
		{"an IPv4-mapped address is unmapped", `{"action":"auth_failed","client_ip":"::ffff:203.0.113.7"}`, "", "203.0.113.7", ""},
		{"IPv6", `{"action":"auth_failed","client_ip":"2001:db8::1"}`, "", "2001:db8::1", ""},
		{"not JSON", `level=info msg="auth failed"`, SkipNotJSON, "", ""},
		{"a JSON array", `[1,2]`, SkipNotJSON, "", ""},
		{"no client_ip", `{"action":"auth_failed"}`, SkipNoClientIP, "", ""},
		{"client_ip not a string", `{"action":"auth_failed","client_ip":12}`, SkipNoClientIP, "", ""},
		{"client_ip not an address", `{"action":"auth_failed","client_ip":"not-an-ip"}`, SkipBadClientIP, "", ""},
		{"a zone is not a client", `{"action":"auth_failed","client_ip":"fe80::1%eth0"}`, SkipBadClientIP, "", ""},
		{"no action", `{"client_ip":"203.0.113.7"}`, SkipNoAction, "", ""},
		{"an over-long line", `{"action":"auth_failed","client_ip":"203.0.113.7","username":"` + strings.Repeat("a", 300) + `"}`, SkipTooLong, "", ""},
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

func TestLongUsernamesAreBounded(t *testing.T) {
	p := NewParser(DefaultFields, 0, false)
	ev, err := p.Parse(time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.1","username":"`+strings.Repeat("é", 1000)+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Username) > maxUsernameBytes || !strings.HasPrefix(ev.Username, "éé") {
		t.Errorf("username of %d bytes", len(ev.Username))
	}
}

func TestLineTimeWhenConfigured(t *testing.T) {
	p := NewParser(DefaultFields, 0, true)
	ev, err := p.Parse(time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.1","ts":"2026-11-22T10:00:04Z"}`)
	if err != nil || !ev.Time.Equal(time.Date(2026, 11, 22, 10, 0, 4, 0, time.UTC)) {
		t.Fatalf("event %+v, err %v", ev, err)
	}
	if _, err := p.Parse(time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.1","ts":"yesterday"}`); err == nil {
		t.Fatal("a bad ts was accepted")
	}
}

func newTail(t *testing.T, srv *lokitest.Server, query string) (*Tail, *Metrics, chan detector.Event) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	tl := NewTail(Config{URL: srv.URL, Query: query}, NewParser(DefaultFields, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan detector.Event, 100)
	done := make(chan struct{})
	go func() { tl.Run(ctx, out); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return tl, m, out
}

func recv(t *testing.T, out chan detector.Event) detector.Event {
	t.Helper()
	select {
	case ev := <-out:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
		return detector.Event{}
	}
}

// waitTail blocks until the tail is delivering, by pushing a probe line
// (from 192.0.2.254, an hour old) until it arrives, then drains the channel.
func waitTail(t *testing.T, srv *lokitest.Server, out chan detector.Event) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		srv.Push("fake", map[string]string{"service": "audit"}, time.Now().Add(-time.Hour), `{"action":"auth_failed","client_ip":"192.0.2.254"}`)
		select {
		case ev := <-out:
			if ev.IP.String() == "192.0.2.254" {
				for len(out) > 0 {
					<-out
				}
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("tail never connected")
		}
	}
}

func TestTailDeliversEventsAndCountsMalformedLines(t *testing.T) {
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	_, m, out := newTail(t, srv, `{service="audit"}`)
	waitTail(t, srv, out)
	audit := map[string]string{"service": "audit"}
	now := time.Now()
	srv.Push("fake", audit, now, `not json at all`)
	srv.Push("fake", audit, now.Add(1), `{"action":"auth_failed"}`)
	srv.Push("fake", audit, now.Add(2), `{"action":"auth_failed","client_ip":"999.1.1.1"}`)
	srv.Push("fake", audit, now.Add(3), `{"action":"auth_failed","client_ip":"203.0.113.7","username":"bob"}`)
	ev := recv(t, out)
	if ev.IP.String() != "203.0.113.7" || ev.Username != "bob" || ev.Time.UnixNano() != now.Add(3).UnixNano() {
		t.Fatalf("event %+v", ev)
	}
	for reason, want := range map[string]float64{SkipNotJSON: 1, SkipNoClientIP: 1, SkipBadClientIP: 1} {
		if got := testutil.ToFloat64(m.Skipped.WithLabelValues(reason)); got != want {
			t.Errorf("skipped[%s] = %v, want %v", reason, got, want)
		}
	}
}

func TestTailResumesAfter1011WithoutRepeats(t *testing.T) {
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	_, m, out := newTail(t, srv, `{service="audit"} | json | action="auth_failed"`)
	waitTail(t, srv, out)
	audit := map[string]string{"service": "audit"}
	base := time.Now()
	srv.Push("fake", audit, base, `{"action":"auth_failed","client_ip":"192.0.2.1"}`)
	recv(t, out)
	srv.DropTails("reached tail max duration limit")
	// Lines written while the tail is down, one at the very nanosecond
	// already delivered.
	srv.Push("fake", audit, base, `{"action":"auth_failed","client_ip":"192.0.2.2"}`)
	srv.Push("fake", audit, base.Add(time.Millisecond), `{"action":"auth_failed","client_ip":"192.0.2.3"}`)
	got := []string{recv(t, out).IP.String(), recv(t, out).IP.String()}
	if got[0] != "192.0.2.2" || got[1] != "192.0.2.3" {
		t.Fatalf("after reconnect got %v", got)
	}
	select {
	case ev := <-out:
		t.Fatalf("repeated event %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	if testutil.ToFloat64(m.Reconnects) < 1 {
		t.Error("reconnect not counted")
	}
}

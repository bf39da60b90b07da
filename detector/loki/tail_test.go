package loki_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/detector/loki/lokitest"
)

func newTail(t *testing.T, srv *lokitest.Server, query string) (*loki.Tail, *loki.Metrics, chan detector.Event) {
	t.Helper()
	m := loki.NewMetrics(prometheus.NewRegistry())
	tl := loki.NewTail(loki.Config{URL: srv.URL, Query: query}, loki.NewParser(loki.DefaultFields, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
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
	for reason, want := range map[string]float64{loki.SkipNotJSON: 1, loki.SkipNoClientIP: 1, loki.SkipBadClientIP: 1} {
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

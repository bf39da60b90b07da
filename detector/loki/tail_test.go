package loki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	tl := mustTail(t, loki.Config{URL: srv.URL, Query: query, Settle: 100 * time.Millisecond}, loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
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

// streamScenario pushes lines into three streams while disrupt runs in the
// middle, then checks that the tail delivered every line exactly once and,
// within each stream, in order.
func streamScenario(t *testing.T, opts lokitest.Options, disrupt func(srv *lokitest.Server)) *loki.Metrics {
	t.Helper()
	srv := lokitest.New(opts)
	defer srv.Close()
	_, m, out := newTail(t, srv, `{service="audit"}`)
	waitTail(t, srv, out)

	const perStream, streams = 300, 3
	got := map[string]int{}
	lastSeq := map[int]int{}
	done := make(chan struct{})
	var outOfOrder []string
	go func() {
		defer close(done)
		for len(got) < perStream*streams+1 {
			select {
			case ev := <-out:
				got[ev.Username]++
				var s, i int
				if _, err := fmt.Sscanf(ev.Username, "s%d-%d", &s, &i); err == nil {
					if i < lastSeq[s] {
						outOfOrder = append(outOfOrder, ev.Username)
					}
					lastSeq[s] = i
				}
			case <-time.After(20 * time.Second):
				return
			}
		}
	}()
	base := time.Now()
	for i := range perStream {
		for s := range streams {
			// Streams share timestamps: entries at one nanosecond are told
			// apart by their lines.
			line := fmt.Sprintf(`{"action":"auth_failed","client_ip":"192.0.2.%d","username":"s%d-%d"}`, s+1, s, i)
			srv.Push("fake", map[string]string{"service": "audit", "stream": strconv.Itoa(s)}, base.Add(time.Duration(i)*time.Microsecond), line)
		}
		if i == perStream/2 {
			disrupt(srv)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // a steady stream, not one burst
		}
	}
	// A last line after everything: once it is in, all the others are.
	srv.Push("fake", map[string]string{"service": "audit"}, base.Add(time.Second), `{"action":"auth_failed","client_ip":"192.0.2.9","username":"end"}`)
	<-done
	if len(got) != perStream*streams+1 {
		var missing []string
		for s := range streams {
			for i := range perStream {
				if got[fmt.Sprintf("s%d-%d", s, i)] == 0 {
					missing = append(missing, fmt.Sprintf("s%d-%d", s, i))
				}
			}
		}
		if got["end"] == 0 {
			missing = append(missing, "end")
		}
		t.Fatalf("delivered %d distinct lines, want %d; missing %v", len(got), perStream*streams+1, missing)
	}
	for u, n := range got {
		if n != 1 {
			t.Errorf("line %s delivered %d times", u, n)
		}
	}
	if len(outOfOrder) > 0 {
		t.Errorf("out of order within a stream: %v", outOfOrder[:min(5, len(outOfOrder))])
	}
	return m
}

func TestEveryLineOnceAcrossA1011Close(t *testing.T) {
	m := streamScenario(t, lokitest.Options{}, func(srv *lokitest.Server) { srv.DropTails("reached tail max duration limit") })
	if testutil.ToFloat64(m.Reconnects) < 1 || testutil.ToFloat64(m.CatchUpPages) < 1 {
		t.Errorf("reconnects %v, catch-up pages %v", testutil.ToFloat64(m.Reconnects), testutil.ToFloat64(m.CatchUpPages))
	}
}

func TestEveryLineOnceAcrossATCPReset(t *testing.T) {
	streamScenario(t, lokitest.Options{}, func(srv *lokitest.Server) { srv.ResetConnections() })
}

func TestEveryLineOnceAcrossALokiRestart(t *testing.T) {
	streamScenario(t, lokitest.Options{StoppingFor: 500 * time.Millisecond, NotReadyFor: 2 * time.Second}, func(srv *lokitest.Server) { srv.Restart() })
}

func TestEveryLineOnceWhenLokiDropsEntries(t *testing.T) {
	m := streamScenario(t, lokitest.Options{}, func(srv *lokitest.Server) { srv.DropNext(50) })
	if testutil.ToFloat64(m.Dropped) != 50 {
		t.Errorf("dropped entries counted %v, want 50", testutil.ToFloat64(m.Dropped))
	}
}

func TestCatchUpPagesThroughMoreThanOnePage(t *testing.T) {
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	// 120 lines written before the daemon starts, 40 of them at one
	// nanosecond; the backfill reads them in pages of 50, so a page ends in
	// the middle of that nanosecond and the next starts at it again.
	base := time.Now().Add(-time.Minute)
	for i := range 120 {
		ts := base.Add(time.Duration(i) * time.Millisecond)
		if i >= 40 && i < 80 {
			ts = base.Add(40 * time.Millisecond)
		}
		srv.Push("fake", map[string]string{"service": "audit"}, ts, fmt.Sprintf(`{"action":"auth_failed","client_ip":"192.0.2.1","username":"u%d"}`, i))
	}
	m := loki.NewMetrics(prometheus.NewRegistry())
	tl := mustTail(t, loki.Config{URL: srv.URL, Query: `{service="audit"}`, Backfill: 2 * time.Minute, PageLimit: 50, Settle: 100 * time.Millisecond},
		loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan detector.Event, 200)
	go tl.Run(ctx, out)
	defer cancel()
	got := map[string]int{}
	for len(got) < 120 {
		select {
		case ev := <-out:
			got[ev.Username]++
			if !ev.CatchUp {
				t.Errorf("backfilled event %s not marked as catch-up", ev.Username)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("backfill delivered %d of 120 lines", len(got))
		}
	}
	for u, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", u, n)
		}
	}
	if pages := testutil.ToFloat64(m.CatchUpPages); pages < 3 {
		t.Errorf("%v catch-up pages for 120 lines at 50 a page", pages)
	}
}

func TestRefusalsSayWhatToChange(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts lokitest.Options
		cfg  loki.Config
		hint string
	}{
		{"multi-tenant Loki without a tenant", lokitest.Options{MultiTenant: true}, loki.Config{Query: `{service="audit"}`}, "set --loki-tenant"},
		{"a query Loki refuses", lokitest.Options{}, loki.Config{Query: `{service!="audit"}`}, "check --loki-query"},
		{"delay_for above 5", lokitest.Options{}, loki.Config{Query: `{service="audit"}`, DelayFor: 6}, "delay_for can't be greater than 5"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := lokitest.New(tt.opts)
			defer srv.Close()
			var logs syncBuffer
			tt.cfg.URL = srv.URL
			tl := mustTail(t, tt.cfg, loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(&logs, nil)), loki.NewMetrics(prometheus.NewRegistry()))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { tl.Run(ctx, make(chan detector.Event)); close(done) }()
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(logs.String(), tt.hint) {
				if time.Now().After(deadline) {
					t.Fatalf("log lacks %q:\n%s", tt.hint, logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TLS with a private CA and a bearer token that is rotated on disk: the
// next connection uses the new token.
func TestTLSAndARotatedBearerToken(t *testing.T) {
	var current atomic.Value
	current.Store("Bearer one")
	srv := lokitest.New(lokitest.Options{TLS: true, Authorize: func(r *http.Request) bool {
		return r.Header.Get("Authorization") == current.Load().(string)
	}})
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("one\n"), 0o600)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	m := loki.NewMetrics(prometheus.NewRegistry())
	tl := mustTail(t, loki.Config{URL: srv.URL, Query: `{service="audit"}`, Settle: 100 * time.Millisecond,
		Header: func(h http.Header) error { // as the daemon's --loki-bearer-token-file
			b, err := os.ReadFile(tokenFile)
			h.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
			return err
		}, TLS: &tls.Config{RootCAs: pool}}, loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan detector.Event, 100)
	done := make(chan struct{})
	go func() { tl.Run(ctx, out); close(done) }()
	defer func() { cancel(); <-done }()
	waitTail(t, srv, out)

	os.WriteFile(tokenFile, []byte("two\n"), 0o600)
	current.Store("Bearer two")
	srv.DropTails("reached tail max duration limit")
	srv.Push("fake", map[string]string{"service": "audit"}, time.Now(), `{"action":"auth_failed","client_ip":"192.0.2.77"}`)
	for ev := recv(t, out); ev.IP.String() != "192.0.2.77"; ev = recv(t, out) {
		if ev.IP.String() != "192.0.2.254" { // late probes may still come
			t.Fatalf("after rotation got %v", ev.IP)
		}
	}
}

func mustTail(t testing.TB, cfg loki.Config, p *loki.Parser, log *slog.Logger, m *loki.Metrics) *loki.Tail {
	t.Helper()
	tl, err := loki.NewTail(cfg, p, log, m)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// One line stamped minutes ahead (Loki takes it within its creation grace
// period) must not make the sweeper deliver the lines after it twice.
func TestALineFromTheFutureMakesNothingCountTwice(t *testing.T) {
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	_, m, out := newTail(t, srv, `{service="audit"}`)
	waitTail(t, srv, out)
	audit := map[string]string{"service": "audit"}
	srv.Push("fake", audit, time.Now().Add(9*time.Minute), `{"action":"auth_failed","client_ip":"192.0.2.66","username":"future"}`)
	got := map[string]int{}
	for i := range 30 {
		srv.Push("fake", audit, time.Now(), fmt.Sprintf(`{"action":"auth_failed","client_ip":"192.0.2.7","username":"u%d"}`, i))
		time.Sleep(100 * time.Millisecond) // a steady trickle over three sweeps
	}
	// Everything is read once the sweeper's mark passes the last line.
	deadline := time.After(20 * time.Second)
	for len(got) < 31 || testutil.ToFloat64(m.Sweeps.WithLabelValues("success")) < 5 {
		select {
		case ev := <-out:
			got[ev.Username]++
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("read %d distinct lines, want 31", len(got))
		}
	}
	for len(out) > 0 {
		got[(<-out).Username]++
	}
	for u, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", u, n)
		}
	}
}

// Something that is not Loki (a proxy's error page) answers with a whole
// HTML page: the error keeps a bounded excerpt of it, not the page.
func TestARefusalKeepsABoundedExcerptOfItsBody(t *testing.T) {
	page := "<html><body>" + strings.Repeat("<p>Bad gateway, please try again later.</p>\n", 5000) + "</body></html>"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, page)
	}))
	defer srv.Close()
	tl := mustTail(t, loki.Config{URL: srv.URL, Query: `{service="audit"}`}, loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.DiscardHandler), loki.NewMetrics(prometheus.NewRegistry()))
	_, err := tl.AttemptsPerMinute(context.Background(), "", time.Now().Add(-time.Minute), time.Now())
	if err == nil || !strings.Contains(err.Error(), "502") || len(err.Error()) > 600 {
		t.Errorf("error of %d bytes: %.700v", len(fmt.Sprint(err)), err)
	}
}

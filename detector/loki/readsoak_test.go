package loki_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/detector/loki/lokitest"
)

// soakResult is what a read soak found.
type soakResult struct {
	pushed, lost, duplicated int
	lagP50, lagP99           time.Duration
	recovered, polled        float64
}

func (r soakResult) String() string {
	return fmt.Sprintf("%d lines: %d lost, %d duplicated; read lag p50 %v, p99 %v; %v recovered by the sweeper; polling %v",
		r.pushed, r.lost, r.duplicated, r.lagP50.Round(time.Millisecond), r.lagP99.Round(time.Millisecond), r.recovered, r.polled)
}

// soakDuration is how long each rate of a read soak pushes:
// AUTHGUARD_SOAK_DURATION, or short by default.
func soakDuration(t *testing.T, def time.Duration) time.Duration {
	if v := os.Getenv("AUTHGUARD_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("AUTHGUARD_SOAK_DURATION=%q: %v", v, err)
		}
		return d
	}
	return def
}

// readSoak pushes rate lines/s for d into Loki at url (snappy protobuf, a
// push every 100 ms as a shipper batches) while a reader with the default
// query reads them; then it counts every line read once, lost or repeated,
// and the read lag (time read minus the entry's timestamp).
func readSoak(t *testing.T, url, tenant string, rate int, d time.Duration, cfg loki.Config) soakResult {
	t.Helper()
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	m := loki.NewMetrics(prometheus.NewRegistry())
	cfg.URL = url
	if tenant != "" {
		cfg.Header = func(h http.Header) error { h.Set("X-Scope-OrgID", tenant); return nil }
	}
	cfg.Query = strings.Replace(loki.DefaultQuery, `{service="audit"}`, fmt.Sprintf(`{service="audit", run=%q}`, run), 1)
	var logs syncBuffer
	tl := mustTail(t, cfg, loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(&logs, nil)), m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan detector.Event, 1<<16)
	readerDone := make(chan struct{})
	go func() { tl.Run(ctx, out); close(readerDone) }()
	defer func() { cancel(); <-readerDone }()
	for tl.Ready(time.Now()) != nil {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-readerDone:
			t.Fatal("the reader stopped")
		}
	}

	total := rate * int(d/time.Second)
	seen := make([]uint8, total)
	var lags []time.Duration
	var mu sync.Mutex
	got := 0
	all := make(chan struct{})
	go func() {
		for ev := range out {
			n, err := strconv.Atoi(strings.TrimPrefix(ev.Username, "u"))
			if err != nil || n < 0 || n >= total {
				continue
			}
			mu.Lock()
			if seen[n] < 255 {
				seen[n]++
			}
			if seen[n] == 1 {
				lags = append(lags, time.Since(ev.Time))
				if got++; got == total {
					close(all)
				}
			}
			mu.Unlock()
		}
	}()

	client := &http.Client{Timeout: 10 * time.Second}
	const tick = 100 * time.Millisecond
	per := rate * int(tick) / int(time.Second)
	ticker := time.NewTicker(tick)
	next := 0
	for next < total {
		<-ticker.C
		now := time.Now()
		streams := map[string]*push.Stream{}
		for i := 0; i < per && next < total; i++ {
			shard := strconv.Itoa(next % 4)
			st := streams[shard]
			if st == nil {
				st = &push.Stream{Labels: fmt.Sprintf(`{service="audit", run=%q, shard=%q}`, run, shard)}
				streams[shard] = st
			}
			st.Entries = append(st.Entries, push.Entry{Timestamp: now.Add(time.Duration(i)), Line: fmt.Sprintf(`{"action":"auth_failed","client_ip":"198.18.%d.%d","username":"u%d"}`, (next>>8)&255, next&255, next)})
			next++
		}
		var req push.PushRequest
		for _, st := range streams {
			req.Streams = append(req.Streams, *st)
		}
		pushWithRetry(t, client, url, tenant, &req)
	}
	ticker.Stop()
	// Wait for every line, or until none has come for 10 s.
	for last, quiet := -1, time.Now(); ; {
		mu.Lock()
		n := got
		mu.Unlock()
		if n != last {
			last, quiet = n, time.Now()
		}
		if n == total || time.Since(quiet) > 10*time.Second {
			break
		}
		select {
		case <-all:
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Repeats would come from a later sweep or poll: await three more.
	if !cfg.NoSweep {
		sweeps := func() float64 { return testutil.ToFloat64(m.Sweeps.WithLabelValues("success")) }
		deadline := time.Now().Add(30 * time.Second)
		for until := sweeps() + 3; sweeps() < until; {
			if time.Now().After(deadline) {
				t.Fatal("the reader stopped sweeping")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	r := soakResult{pushed: total, recovered: testutil.ToFloat64(m.Recovered), polled: testutil.ToFloat64(m.Polling)}
	for _, n := range seen {
		switch {
		case n == 0:
			r.lost++
		case n > 1:
			r.duplicated += int(n) - 1
		}
	}
	slices.Sort(lags)
	if len(lags) > 0 {
		r.lagP50, r.lagP99 = lags[len(lags)/2], lags[len(lags)*99/100]
	}
	if t.Failed() || r.lost > 0 && !cfg.NoSweep {
		t.Logf("reader log:\n%s", logs.String())
	}
	return r
}

func pushWithRetry(t *testing.T, c *http.Client, url, tenant string, req *push.PushRequest) {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	body := snappy.Encode(nil, raw)
	for attempt := 0; ; attempt++ {
		r, _ := http.NewRequest("POST", url+"/loki/api/v1/push", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/x-protobuf")
		if tenant != "" {
			r.Header.Set("X-Scope-OrgID", tenant)
		}
		resp, err := c.Do(r)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
			err = fmt.Errorf("%s %s", resp.Status, b)
		}
		if attempt == 20 {
			t.Fatalf("push: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the pusher's own backoff
	}
}

// The read soak through the fake with every real-Loki behaviour on: every
// line is read once at 200, 2,000 and 20,000 lines/s.
func TestEveryLineOnceAtEveryRate(t *testing.T) {
	d := soakDuration(t, 10*time.Second)
	for _, rate := range []int{200, 2000, 20000} {
		t.Run(strconv.Itoa(rate)+" lines/s", func(t *testing.T) {
			srv := lokitest.New(lokitest.Options{})
			defer srv.Close()
			r := readSoak(t, srv.URL, "", rate, d, loki.Config{Settle: 100 * time.Millisecond})
			t.Logf("fake Loki, %d lines/s for %v: %v", rate, d, r)
			if r.lost > 0 || r.duplicated > 0 {
				t.Errorf("%d lost, %d duplicated", r.lost, r.duplicated)
			}
		})
	}
}

// Without the sweeper the fake's tail loses lines, as a real one does: the
// soak above could fail.
func TestWithoutTheSweeperTheTailLosesLines(t *testing.T) {
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	r := readSoak(t, srv.URL, "", 5000, soakDuration(t, 10*time.Second), loki.Config{Settle: 100 * time.Millisecond, NoSweep: true})
	t.Logf("fake Loki, 5000 lines/s, no sweeper: %v", r)
	if r.lost == 0 {
		t.Errorf("no line lost without the sweeper at 5,000 lines/s: %v", r)
	}
}

// A tail that loses whole pushes without a word below the polling rate:
// the sweeper reads every line it lost, once.
func TestTheSweeperReadsWhatTheTailLostSilently(t *testing.T) {
	srv := lokitest.New(lokitest.Options{TailCapacity: 100, TailBuffer: 50})
	defer srv.Close()
	r := readSoak(t, srv.URL, "", 300, 5*time.Second, loki.Config{Settle: 100 * time.Millisecond})
	t.Logf("fake Loki keeping 100 entries/s of 300: %v", r)
	if r.lost > 0 || r.duplicated > 0 || r.recovered == 0 || r.polled != 0 {
		t.Errorf("want every line once, some through the sweeper, still tailing: %v", r)
	}
}

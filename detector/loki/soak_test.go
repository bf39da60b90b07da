//go:build soak

package loki_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/detector/loki/lokitest"
)

// TestSoak pushes 20,000 lines/s into the fake Loki for AUTHGUARD_SOAK
// (default 10m) while the tail is forced to reconnect every 5 s, by turns a
// 1011 close, a TCP reset and a Loki restart; then it checks that every line
// was delivered exactly once. Run it with `make soak`.
func TestSoak(t *testing.T) {
	duration := 10 * time.Minute
	if v := os.Getenv("AUTHGUARD_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("AUTHGUARD_SOAK=%q: %v", v, err)
		}
		duration = d
	}
	const rate, tick = 20000, 10 * time.Millisecond
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	m := loki.NewMetrics(prometheus.NewRegistry())
	tl := mustTail(t, loki.Config{URL: srv.URL, Query: `{service="audit"}`, DedupWindow: 10 * time.Second},
		loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan detector.Event, 65536)
	go tl.Run(ctx, out)
	for !tl.Connected() {
		time.Sleep(10 * time.Millisecond)
	}

	seen := make(map[int]int, rate*int(duration/time.Second))
	counted := make(chan struct{})
	var expected int
	go func() {
		defer close(counted)
		for ev := range out {
			if ev.Username == "end" {
				return
			}
			var n int
			if _, err := fmt.Sscanf(ev.Username, "u%d", &n); err == nil {
				seen[n]++
			}
		}
	}()

	start := time.Now()
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	disruptions := 0
	nextDisruption := start.Add(5 * time.Second)
	for time.Since(start) < duration {
		<-ticker.C
		now := time.Now()
		for i := 0; i < rate*int(tick)/int(time.Second); i++ {
			line := fmt.Sprintf(`{"action":"auth_failed","client_ip":"198.18.%d.%d","username":"u%d"}`, (expected>>8)&255, expected&255, expected)
			srv.Push("fake", map[string]string{"service": "audit", "shard": fmt.Sprint(expected % 4)}, now.Add(time.Duration(i)), line)
			expected++
		}
		if now.After(nextDisruption) {
			switch disruptions % 3 {
			case 0:
				srv.DropTails("reached tail max duration limit")
			case 1:
				srv.ResetConnections()
			case 2:
				srv.Restart()
			}
			disruptions++
			nextDisruption = now.Add(5 * time.Second)
		}
	}
	srv.Push("fake", map[string]string{"service": "audit"}, time.Now().Add(time.Second), `{"action":"auth_failed","client_ip":"192.0.2.9","username":"end"}`)
	select {
	case <-counted:
	case <-time.After(5 * time.Minute):
		t.Fatal("the end marker never arrived")
	}
	lost, dup := 0, 0
	for i := range expected {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	t.Logf("%d lines in %v (%.0f lines/s), %d forced reconnects (%v counted), %v catch-up pages: %d lost, %d duplicated",
		expected, duration, float64(expected)/duration.Seconds(), disruptions, testutil.ToFloat64(m.Reconnects), testutil.ToFloat64(m.CatchUpPages), lost, dup)
	if lost > 0 || dup > 0 {
		t.Fatalf("%d lost, %d duplicated", lost, dup)
	}
}

package loki_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/detector/loki/lokitest"
)

// The attempts of one address per minute, as pages draw them, come from
// Loki's count_over_time: the address's failures only, each in its minute,
// quiet minutes counted as zero.
func TestAttemptsPerMinute(t *testing.T) {
	srv := lokitest.New(lokitest.Options{})
	defer srv.Close()
	audit := map[string]string{"service": "audit"}
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	push := func(at time.Duration, ip, action string) {
		srv.Push("fake", audit, base.Add(at), `{"action":"`+action+`","client_ip":"`+ip+`","username":"u"}`)
	}
	for i := range 3 {
		push(10*time.Second+time.Duration(i)*time.Second, "203.0.113.7", "auth_failed") // 3 in 10:00–10:01
	}
	push(90*time.Second, "198.51.100.1", "auth_failed")   // another address
	push(95*time.Second, "203.0.113.7", "auth_succeeded") // not a failure
	for i := range 5 {
		push(3*time.Minute+time.Duration(i+1)*time.Second, "203.0.113.7", "auth_failed") // 5 in 10:03–10:04
	}
	tail := mustTail(t, loki.Config{URL: srv.URL}, loki.NewParser(loki.DefaultFields, 0, 0, false), slog.New(slog.NewTextHandler(io.Discard, nil)), loki.NewMetrics(prometheus.NewRegistry()))
	got, err := tail.AttemptsPerMinute(context.Background(), "203.0.113.7", base.Add(10*time.Second), base.Add(3*time.Minute+5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{3, 0, 0, 5}; !slices.Equal(got, want) {
		t.Errorf("per minute %v, want %v", got, want)
	}
	all, err := tail.AttemptsPerMinute(context.Background(), "", base.Add(10*time.Second), base.Add(3*time.Minute+5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{3, 1, 0, 5}; !slices.Equal(all, want) {
		t.Errorf("all clients per minute %v, want %v", all, want)
	}
	if _, err := tail.AttemptsPerMinute(context.Background(), "2001:db8::/64", base, base); err == nil {
		t.Error("counted a prefix")
	}
}

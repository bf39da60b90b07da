package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authguard/authguard/detector/loki/lokitest"
)

func storedLines(t *testing.T, lk *lokitest.Server) int {
	t.Helper()
	req, _ := http.NewRequest("GET", lk.URL+"/loki/api/v1/query_range?"+url.Values{"query": {`{service="audit", env="test"}`}, "start": {"0"}, "limit": {"5000"}}.Encode(), nil)
	req.Header.Set("X-Scope-OrgID", "fake")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Values [][2]string `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	n := 0
	for _, s := range r.Data.Result {
		n += len(s.Values)
	}
	return n
}

// Loki refuses the first pushes with 503 (an outage); every line still
// arrives, once.
func TestAuditLinesArePushedAsSnappyProtobufThroughAnOutage(t *testing.T) {
	lk := lokitest.New(lokitest.Options{MultiTenant: true})
	defer lk.Close()
	target, _ := url.Parse(lk.URL)
	var failures atomic.Int32
	failures.Store(3)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(-1) >= 0 {
			http.Error(w, "ingester unavailable", http.StatusServiceUnavailable)
			return
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer flaky.Close()
	p, err := NewPusher(PusherOptions{URL: flaky.URL, Header: func(h http.Header) error { h.Set("X-Scope-OrgID", "fake"); return nil }, Labels: map[string]string{"env": "test"}, Batch: 10, FlushEvery: 10 * time.Millisecond, Log: quietLog(), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	at := time.Now()
	for i := range 25 {
		p.Audit(at.Add(time.Duration(i)), []byte(`{"action":"auth_failed","client_ip":"192.0.2.`+strconv.Itoa(i)+`"}`))
	}
	// The metric moves once Loki has answered, a moment after it stored
	// the lines: both are awaited.
	deadline := time.Now().Add(10 * time.Second)
	for storedLines(t, lk) != 25 || testutil.ToFloat64(p.pushed) != 25 {
		if time.Now().After(deadline) {
			t.Fatalf("loki holds %d lines, want 25; pushed metric %v", storedLines(t, lk), testutil.ToFloat64(p.pushed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(p.errors); got < 3 {
		t.Errorf("push errors %v, want the 3 refusals counted", got)
	}
}

func TestAFullAuditQueueDropsTheOldestAndCountsIt(t *testing.T) {
	p, _ := NewPusher(PusherOptions{URL: "http://127.0.0.1:1", Queue: 3, Log: quietLog(), Registry: prometheus.NewRegistry()})
	for i := range 5 {
		p.Audit(time.Unix(int64(i), 0), []byte(strconv.Itoa(i)))
	}
	if got := testutil.ToFloat64(p.dropped); got != 2 {
		t.Errorf("dropped %v, want 2", got)
	}
	if len(p.queue) != 3 || p.queue[0].Line != "2" {
		t.Errorf("queue %v, want the newest three", p.queue)
	}
	// A push that covered lines already lost to overflow takes off only
	// what is still there.
	p.drop(p.removed + 1)
	if len(p.queue) != 2 || p.queue[0].Line != "3" {
		t.Errorf("after drop: %v", p.queue)
	}
}

package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/cmd/internal/redisflag"
)

const burstRules = `rules:
  - name: burst
    match: {action: auth_failed}
    group_by: client_ip
    window: 1h
    threshold: 3
    block: {ttl: %TTL%}
`

// startDaemon runs a daemon with the push receiver only (no Loki) and a
// Redis that is not there: decisions are made and counted, writes wait.
func startDaemon(t *testing.T, rulesPath string) (base string, d *daemon) {
	t.Helper()
	return startDaemonLifecycle(t, rulesPath, true)
}

func startDaemonLifecycle(t *testing.T, rulesPath string, lifecycle bool) (base string, d *daemon) {
	t.Helper()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	deadRedis := "redis://" + l.Addr().String() + "/0"
	l.Close()
	c := runCmd{Rules: rulesPath, Flags: redisflag.Flags{RedisURL: deadRedis}, Listen: "127.0.0.1:0", MaxLineBytes: 16384, PushMaxBytes: 1 << 20, EnableLifecycle: lifecycle, PushAllowUnauthenticated: true, PushListen: "127.0.0.1:0"}
	d, err := c.build(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d.reloader.interval = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + d.listener.Addr().String(), d
}

func pushFailure(t *testing.T, d *daemon, ip string, at time.Time) {
	t.Helper()
	base := "http://" + d.pushLn.Addr().String()
	body := `{"streams":[{"stream":{"service":"audit"},"values":[["` + strconv.FormatInt(at.UnixNano(), 10) + `","{\"action\":\"auth_failed\",\"client_ip\":\"` + ip + `\"}"]]}]}`
	resp, err := http.Post(base+"/loki/api/v1/push", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("push: %v %v", resp, err)
	}
	resp.Body.Close()
}

func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + ` ([0-9.e+]+)$`)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
	}
	return 0
}

// awaitMetric waits until the metric reaches at least want.
func awaitMetric(t *testing.T, base, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, base, name) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want at least %v", name, metricValue(t, base, name), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReloadKeepsWindowsAndSurvivesBrokenEdits(t *testing.T) {
	path := write(t, "rules.yaml", strings.ReplaceAll(burstRules, "%TTL%", "5m"))
	base, d := startDaemon(t, path)
	at := time.Now()
	pushFailure(t, d, "203.0.113.7", at)
	pushFailure(t, d, "203.0.113.7", at.Add(time.Millisecond))
	awaitMetric(t, base, "authguard_events_processed_total", 2)

	// A broken edit through the API: refused with its position, old rules kept.
	os.WriteFile(path, []byte("rules:\n  - name: burst\n    treshold: 3\n"), 0o644)
	resp, err := http.Post(base+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(msg), path+`:3:5: unknown field "treshold"`) {
		t.Fatalf("broken reload: %d %s", resp.StatusCode, msg)
	}
	// (The file watcher may report the same broken edit once more.)
	awaitMetric(t, base, `authguard_rules_reloads_total{result="failure"}`, 1)

	// A valid edit picked up from the file: same counting, longer block.
	os.WriteFile(path, []byte(strings.ReplaceAll(burstRules, "%TTL%", "1h")), 0o644)
	awaitMetric(t, base, `authguard_rules_reloads_total{result="success"}`, 1)

	// The window survived both: the third failure fires.
	pushFailure(t, d, "203.0.113.7", at.Add(2*time.Millisecond))
	awaitMetric(t, base, `authguard_decisions_total{kind="block",rule="burst"}`, 1)
	if n := metricValue(t, base, `authguard_decisions_total{kind="block",rule="burst"}`); n != 1 {
		t.Errorf("%v blocks, want 1", n)
	}
}

// Without --enable-lifecycle the admin listener has no /-/reload.
func TestReloadEndpointOnlyWithEnableLifecycle(t *testing.T) {
	path := write(t, "rules.yaml", strings.ReplaceAll(burstRules, "%TTL%", "5m"))
	base, _ := startDaemonLifecycle(t, path, false)
	resp, err := http.Post(base+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /-/reload without --enable-lifecycle: %d, want 404", resp.StatusCode)
	}
}

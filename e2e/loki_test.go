package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The daemon stops in the middle of an attack and starts again: it re-reads
// the window from Loki and decides as if it had never stopped. A second
// restart re-reads the same events and repeats nothing it already did.
func TestDaemonRestartMidWindow(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ctx := context.Background()
	ip := "203.0.113.110"
	for range 3 {
		s.login(ip, "guess")
	}
	s.awaitEvents(3)
	s.restartDaemon(func() {
		for range 2 {
			s.login(ip, "guess") // while the daemon is down
		}
	})
	s.awaitBlocked(ip)
	if v := s.rdb.Get(ctx, "login_fail:"+ip).Val(); v != "5" {
		t.Errorf("login_fail = %s, want 5", v)
	}
	select {
	case <-s.slack.posts:
	case <-time.After(10 * time.Second):
		t.Fatal("no page for the block")
	}
	evidence := s.rdb.XLen(ctx, "authguard:evidence").Val()

	s.restartDaemon(func() {})
	eventually(t, 15*time.Second, "the restarted daemon to find its block already written", func() bool {
		return s.metric("authguard_decisions_already_done_total") >= 1
	})
	if n := s.rdb.XLen(ctx, "authguard:evidence").Val(); n != evidence {
		t.Errorf("evidence grew from %d to %d records on a restart", evidence, n)
	}
	select {
	case p := <-s.slack.posts:
		t.Errorf("a restart paged again: %q", p["text"])
	default:
	}
}

// With no Loki at all the gateway pushes its audit lines straight to the
// daemon's Loki-compatible push receiver, and the runbook loop still runs.
func TestGatewayPushesStraightToTheDaemon(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true})
	ip := "203.0.113.120"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	if v := s.rdb.Get(context.Background(), "login_fail:"+ip).Val(); v != "5" {
		t.Errorf("login_fail = %s, want 5", v)
	}
	if n := s.metric(`authguard_push_requests_total{code="204"}`); n < 1 {
		t.Errorf("push requests answered 204: %v", n)
	}
}

// Replaying the log of a live run gives the decisions the live run made.
func TestReplayDecidesLikeTheLiveRun(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ctx := context.Background()
	attack := map[string]int{"203.0.113.130": 5, "203.0.113.131": 5, "203.0.113.132": 3}
	for ip, n := range attack {
		for range n {
			s.login(ip, "guess")
		}
	}
	s.login("198.51.100.130", "correct horse")
	s.awaitBlocked("203.0.113.130")
	s.awaitBlocked("203.0.113.131")
	s.awaitEvents(13)

	var live []string
	for _, m := range s.rdb.XRange(ctx, "authguard:evidence", "-", "+").Val() {
		if evidenceField(m, "action") == "block" {
			live = append(live, evidenceField(m, "rule")+" "+evidenceField(m, "ip")+" "+evidenceField(m, "count"))
		}
	}

	// The run's log, as logcli --output=jsonl would write it.
	dump := filepath.Join(t.TempDir(), "run.jsonl")
	f, _ := os.Create(dump)
	for _, e := range s.loki.entries(t, fmt.Sprintf(`{service="audit", run=%q}`, s.run)) {
		json.NewEncoder(f).Encode(map[string]any{"labels": e.labels, "line": e.line, "timestamp": time.Unix(0, e.ts).UTC().Format(time.RFC3339Nano)})
	}
	f.Close()
	out, err := exec.Command(filepath.Join(binDir, "authguard"), "replay", "--rules", s.rulesFile, "--output", "jsonl", dump).Output()
	if err != nil {
		t.Fatal(err)
	}
	var replayed []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var d struct {
			Rule, Key, Action string
			Count             int
		}
		json.Unmarshal([]byte(line), &d)
		replayed = append(replayed, fmt.Sprintf("%s %s %d", d.Rule, d.Key, d.Count))
	}
	slices.Sort(live)
	slices.Sort(replayed)
	if len(live) != 2 || !slices.Equal(live, replayed) {
		t.Errorf("live decided %v, replay %v", live, replayed)
	}
}

// Twenty addresses fail five logins each, all at once: every one is
// blocked. With a real Loki and the old default query (a | json stage in
// the tail) 12 of these 100 lines were read and none was blocked.
func TestTwentyConcurrentAttackersAreAllBlocked(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	var wg sync.WaitGroup
	var ips []string
	for i := range 20 {
		ip := fmt.Sprintf("203.0.113.%d", 150+i)
		ips = append(ips, ip)
		for range 5 {
			wg.Add(1)
			go func() { defer wg.Done(); s.login(ip, "guess") }()
		}
	}
	wg.Wait()
	for _, ip := range ips {
		s.awaitBlocked(ip)
	}
	if n := s.metric("authguard_events_processed_total"); n < 100 {
		t.Errorf("%v events processed, want all 100", n)
	}
}

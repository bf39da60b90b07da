package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Runbook SEC-010: five wrong logins from one IP within a day block it; the
// gateway refuses it with 403 AUTH_004 until the TTL ends; others pass.
func TestRunbookBurstBlocksUntilTheTTLEnds(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "2s"})
	attacker, bystander := "203.0.113.10", "198.51.100.20"
	began := time.Now()
	for i := range 4 {
		if a := s.login(attacker, "guess"); a.status != http.StatusUnauthorized {
			t.Fatalf("wrong login %d: %d %s", i+1, a.status, a.body)
		}
	}
	s.awaitEvents(4)
	if s.exists("ip_block:" + attacker) {
		t.Fatal("blocked after only four failures")
	}
	if a := s.request(attacker, "GET", "/health", ""); a.status != http.StatusOK {
		t.Fatalf("after four failures the attacker got %d", a.status)
	}
	if a := s.login(attacker, "guess"); a.status != http.StatusUnauthorized {
		t.Fatalf("fifth wrong login: %d", a.status)
	}
	a := s.awaitBlocked(attacker)
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(a.body), &body); err != nil || body.Error.Code != "AUTH_004" || body.Error.Message == "" {
		t.Errorf("403 body %q", a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("403 content type %q", ct)
	}
	if ra := a.header.Get("Retry-After"); ra != "1" && ra != "2" {
		t.Errorf("Retry-After %q for a 2 s block", ra)
	}
	if a := s.login(attacker, "correct horse"); a.status != http.StatusForbidden {
		t.Errorf("a blocked IP logged in: %d", a.status)
	}
	if a := s.login(bystander, "correct horse"); a.status != http.StatusOK {
		t.Errorf("another IP was affected: %d", a.status)
	}
	ctx := context.Background()
	if v, _ := s.rdb.Get(ctx, "ip_block:"+attacker).Result(); v != "1" {
		t.Errorf("ip_block = %q, want 1", v)
	}
	if v, _ := s.rdb.Get(ctx, "login_fail:"+attacker).Result(); v != "5" {
		t.Errorf("login_fail = %q, want 5", v)
	}
	// The metadata says what blocked the IP and when it was seen.
	meta := s.rdb.HGetAll(ctx, "authguard:block:"+attacker).Val()
	first, ferr := time.Parse(time.RFC3339Nano, meta["first_seen"])
	last, lerr := time.Parse(time.RFC3339Nano, meta["last_seen"])
	if meta["rule"] != "failed-login-burst" || meta["count"] != "5" || meta["severity"] == "" || meta["incident"] == "" ||
		ferr != nil || lerr != nil || first.Before(began.Add(-time.Second)) || last.Before(first) || last.After(time.Now()) {
		t.Errorf("metadata %v", meta)
	}
	// The TTL runs out on its own; the IP then logs in.
	eventually(t, 10*time.Second, "the block to expire in Redis", func() bool { return !s.exists("ip_block:" + attacker) })
	if s.exists("login_fail:" + attacker) {
		t.Error("login_fail outlived the block")
	}
	s.awaitAllowed(attacker)
	if a := s.login(attacker, "correct horse"); a.status != http.StatusOK {
		t.Errorf("after the TTL the IP could not log in: %d", a.status)
	}
}

// Runbook SEC-010 §4.1: deleting only ip_block:<ip> is not an unblock (the
// next 401 blocks again); deleting both keys gives five fresh attempts.
func TestRunbookUnblockNeedsBothKeys(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "60s"})
	ctx := context.Background()
	ip := "203.0.113.11"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)

	s.rdb.Del(ctx, "ip_block:"+ip)
	s.awaitAllowed(ip)
	if a := s.login(ip, "guess"); a.status != http.StatusUnauthorized {
		t.Fatalf("after DEL ip_block the login got %d", a.status)
	}
	s.awaitBlocked(ip)
	if v, _ := s.rdb.Get(ctx, "login_fail:"+ip).Result(); v != "6" {
		t.Errorf("login_fail = %q after the re-block, want 6", v)
	}

	s.rdb.Del(ctx, "ip_block:"+ip, "login_fail:"+ip)
	s.expectCleanSlate(ip, "DEL of both keys")
}

// Runbook SEC-010 §2.2: a block set by hand with redis-cli is enforced.
func TestRunbookManualBlockIsEnforced(t *testing.T) {
	s := newStack(t, stackOptions{})
	ip := "203.0.113.12"
	s.awaitAllowed(ip)
	s.rdb.Set(context.Background(), "ip_block:"+ip, "1", 300*time.Second)
	a := s.awaitBlocked(ip)
	if !strings.Contains(a.body, "AUTH_004") {
		t.Errorf("403 body %q", a.body)
	}
	if a := s.request("203.0.113.13", "GET", "/health", ""); a.status != http.StatusOK {
		t.Errorf("a neighbour was blocked: %d", a.status)
	}
}

// The incident page names the IP, the rule, the count and the expiry in UTC.
func TestSlackPageDescribesTheBlock(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ip := "203.0.113.14"
	for range 5 {
		s.login(ip, "guess")
	}
	var page map[string][]string
	select {
	case page = <-s.slack.posts:
	case <-time.After(15 * time.Second):
		t.Fatal("no Slack page within 15 s")
	}
	ttl, err := s.rdb.PTTL(context.Background(), "ip_block:"+ip).Result()
	if err != nil || ttl <= 0 {
		t.Fatalf("ip_block TTL %v, %v", ttl, err)
	}
	text := page["text"][0]
	for _, want := range []string{ip, "failed-login-burst", "5 failed attempts"} {
		if !strings.Contains(text, want) {
			t.Errorf("page %q lacks %q", text, want)
		}
	}
	m := regexp.MustCompile(`until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("page %q names no expiry in UTC", text)
	}
	expiry, _ := time.Parse("2006-01-02 15:04:05", m[1])
	if want := time.Now().Add(ttl); expiry.Sub(want).Abs() > 3*time.Second {
		t.Errorf("page says the block ends %v; Redis says %v", expiry, want.UTC())
	}
	// The page draws the attempts per minute, counted by Loki (the five
	// failures may straddle a minute boundary).
	if !regexp.MustCompile("Attempts per minute\\*\\\\n`[▁-█]{1,2}` peak [1-5] over [12] min").MatchString(page["attachments"][0]) {
		t.Errorf("the page has no sparkline of 5 attempts: %s", page["attachments"][0])
	}
	if page["channel"][0] != "#security" {
		t.Errorf("posted to %q", page["channel"])
	}
	select {
	case extra := <-s.slack.posts:
		t.Errorf("a second page for one incident: %q", extra["text"])
	default:
	}
}

// Malformed lines are counted by reason and skipped; detection goes on.
func TestMalformedLinesAreCountedAndSkipped(t *testing.T) {
	s := newStack(t, stackOptions{query: "%s"}) // no LogQL filter: the daemon sees every line
	labels := map[string]string{"service": "audit", "run": s.run}
	s.loki.push(t, labels,
		`this is not json`,
		`{"action":"auth_failed","username":"bob"}`,
		`{"action":"auth_failed","client_ip":"300.1.2.3"}`,
	)
	eventually(t, 15*time.Second, "three skipped lines to be counted", func() bool {
		return s.metric(`authguard_loki_lines_skipped_total{reason="not_json"}`) == 1 &&
			s.metric(`authguard_loki_lines_skipped_total{reason="no_client_ip"}`) == 1 &&
			s.metric(`authguard_loki_lines_skipped_total{reason="bad_client_ip"}`) == 1
	})
	ip := "203.0.113.15"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	if strings.Contains(s.daemon.output(), "panic") {
		t.Error("the daemon panicked")
	}
	if !strings.Contains(s.daemon.output(), "this is not json") {
		t.Error("no sample of the bad line in the log")
	}
}

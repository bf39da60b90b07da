package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Evasions: an attacker's failed logins always count, whatever the
// attacker does around them.

// One audit line stamped a year ahead (a workload writing lines, or a pod
// with a skewed clock; the daemon takes event time from the line's ts)
// used to move the lateness watermark so that every failure after it was
// "late" and nobody was blocked. It is counted at the clock's time, shown
// in a metric and the log, and the attack after it is blocked.
func TestALineFromTheFutureDoesNotBlindTheDetector(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", dArgs: []string{"--use-line-time"}})
	future := time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339Nano)
	s.loki.push(t, map[string]string{"service": "audit", "run": s.run},
		fmt.Sprintf(`{"ts":%q,"action":"auth_failed","client_ip":"192.0.2.66","username":"clock-skew"}`, future))
	eventually(t, 15*time.Second, "the future line to be counted at the clock's time", func() bool {
		return s.metric("authguard_detector_future_events_total") >= 1
	})
	ip := "203.0.113.160"
	for range 5 {
		s.login(ip, "guess")
	}
	a := s.awaitBlocked(ip)
	if !strings.Contains(a.body, "AUTH_004") {
		t.Errorf("blocked answer %q", a.body)
	}
	if n := s.metric("authguard_detector_late_events_total"); n != 0 {
		t.Errorf("%v events dropped as late after the future line", n)
	}
	eventually(t, 5*time.Second, "the daemon's log to show the clamped line", func() bool {
		out := s.daemon.output()
		return strings.Contains(out, "event stamped ahead of the clock") && strings.Contains(out, "clock-skew")
	})
}

// An emitter that logs the whole User-Agent (the nginx example, with JSON
// escaping that doubles it) writes audit lines over 16 KB for an attacker
// with an 8 KB header. They used to be skipped as too long; they count.
func TestALongHeaderDoesNotHideFailedLogins(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ip := "203.0.113.161"
	ua := strings.Repeat(`\"`, 8<<10) // 8 KB of quotes, escaped by the emitter
	for i := range 5 {
		s.loki.push(t, map[string]string{"service": "audit", "run": s.run},
			fmt.Sprintf(`{"service":"audit","action":"auth_failed","client_ip":%q,"username":"u%d","path":"/auth/login","status":401,"user_agent":"%s"}`, ip, i, ua))
	}
	s.awaitBlocked(ip)
	if n := s.metric(`authguard_loki_lines_skipped_total{reason="too_long"}`); n != 0 {
		t.Errorf("%v lines skipped as too long", n)
	}
}

// The login route spelled another way reaches an application whose router
// ignores case and a trailing slash, gets 401, and used to go unaudited by
// the gateway. Every spelling is audited: five failures block.
func TestEverySpellingOfTheLoginRouteCounts(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	for i, p := range []string{"/auth/login/", "/AUTH/LOGIN", "/Auth/Login", "/auth/login%2F", "//auth/./login", "/auth/login;jsessionid=x"} {
		ip := fmt.Sprintf("203.0.113.%d", 170+i)
		for range 5 {
			if a := s.request(ip, "POST", p, `{"username":"alice","password":"guess"}`); a.status != 401 {
				t.Fatalf("POST %s: %d, want the application's 401", p, a.status)
			}
		}
		if a := s.awaitBlocked(ip); !strings.Contains(a.body, "AUTH_004") {
			t.Errorf("POST %s: blocked with %q", p, a.body)
		}
	}
}

// An emitter that writes the client address as it got it: five spellings
// of one address are five failures of one client.
func TestEverySpellingOfAnAddressIsOneClient(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	for i, spelled := range []string{"203.0.113.180", "::ffff:203.0.113.180", "::203.0.113.180", "203.000.113.180", "203.0.113.180:51234"} {
		s.loki.push(t, map[string]string{"service": "audit", "run": s.run},
			fmt.Sprintf(`{"action":"auth_failed","client_ip":%q,"username":"u%d"}`, spelled, i))
	}
	s.awaitBlocked("203.0.113.180")
	if n := s.metric(`authguard_loki_lines_skipped_total{reason="bad_client_ip"}`); n != 0 {
		t.Errorf("%v lines skipped for their address", n)
	}
}

// A login body padded far past what the gateway reads for the username
// (the credentials first, then megabytes of spaces) is still audited, and
// the application's 401 is what the client gets.
func TestAPaddedLoginBodyIsStillAudited(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ip := "203.0.113.181"
	body := `{"username":"alice","password":"guess"}` + strings.Repeat(" ", 2<<20)
	for range 5 {
		if a := s.request(ip, "POST", "/auth/login", body); a.status != 401 {
			t.Fatalf("padded login: %d %s", a.status, a.body)
		}
	}
	s.awaitBlocked(ip)
}

// Five wrong passwords in the same instant are five lines (each with its
// request id), never one line five times: Loki keeps an exact repeat once.
func TestFiveFailuresAtOnceAreFiveEvents(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ip := "203.0.113.182"
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); s.login(ip, "guess") }()
	}
	wg.Wait()
	s.awaitBlocked(ip)
	var lines []string
	for _, e := range s.loki.entries(t, fmt.Sprintf(`{service="audit", run=%q}`, s.run)) {
		if strings.Contains(e.line, ip) {
			lines = append(lines, e.line)
		}
	}
	if len(lines) != 5 || !strings.Contains(lines[0], `"request_id":"`) {
		t.Errorf("Loki holds %d lines for the five attempts: %q", len(lines), lines)
	}
}

// Addresses that must never be blocked stay reachable whatever the rules
// decide: the --never-block networks (the gateways' own proxies) and
// link-local ones. The refusal is in the evidence and the metrics, and no
// ip_block key is written.
func TestAddressesThatMustNeverBeBlockedStayReachable(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true, dArgs: []string{"--never-block", "198.18.0.0/15"}})
	ctx := context.Background()
	for _, ip := range []string{"198.18.0.9", "169.254.1.1"} {
		for range 5 {
			s.login(ip, "guess")
		}
	}
	// A third attacker, after the others, is blocked: the refusals were
	// decided by then (one pipeline, in order).
	for range 5 {
		s.login("203.0.113.197", "guess")
	}
	s.awaitBlocked("203.0.113.197")
	eventually(t, 10*time.Second, "both refusals to be counted", func() bool { return s.metric("authguard_blocks_refused_total") == 2 })
	for _, ip := range []string{"198.18.0.9", "169.254.1.1"} {
		if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusOK {
			t.Errorf("%s is refused: %d", ip, a.status)
		}
		if n := s.rdb.Exists(ctx, "ip_block:"+ip).Val(); n != 0 {
			t.Errorf("ip_block:%s was written", ip)
		}
		refused := false
		for _, m := range s.rdb.XRange(ctx, "authguard:evidence", "-", "+").Val() {
			refused = refused || (evidenceField(m, "ip") == ip && evidenceField(m, "action") == "refused")
		}
		if !refused {
			t.Errorf("no refused record in the evidence for %s", ip)
		}
	}
}

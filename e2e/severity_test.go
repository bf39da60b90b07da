package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// renamedScale names the severity levels SEV1-SEV3 instead of P1-P3: 5
// failures within a minute are SEV1, spread over about two minutes SEV2,
// over four minutes SEV3.
const renamedScale = `rules:
  - name: failed-login-burst
    match: {action: auth_failed}
    group_by: client_ip
    window: 24h
    threshold: 5
    block: {ttl: 300s}
    alert: true
severity:
  - {level: SEV1, above: 4}
  - {level: SEV2, above: 2}
  - {level: SEV3, above: 0}
`

// pushSpread pushes five failures of ip, spread evenly over span and
// ending end ago, to the daemon's receiver, as the gateway would.
func (s *stack) pushSpread(t *testing.T, ip string, span, end time.Duration) {
	t.Helper()
	var at []time.Time
	last := time.Now().Add(-end)
	for i := range 5 {
		at = append(at, last.Add(-span+time.Duration(i)*span/4))
	}
	if code := s.pushAnswer(t, s.token(t), "", "application/json", failuresAt(ip, at)); code != http.StatusNoContent {
		t.Fatalf("push for %s: %d", ip, code)
	}
}

// Severity levels are the rules file's to name: with the levels renamed
// SEV1-SEV3 the most severe page is still red and the next amber, and a
// burst's summary takes the most severe of its incidents.
func TestRenamedSeverityLevelsKeepColoursAndOrder(t *testing.T) {
	attack := func(s *stack) {
		s.pushSpread(t, "203.0.113.201", 4*time.Minute, time.Minute)    // 1.25/min: SEV3
		s.pushSpread(t, "203.0.113.202", 2*time.Minute, 30*time.Second) // 2.5/min: SEV2
		s.pushSpread(t, "203.0.113.203", 10*time.Second, 0)             // 5/min: SEV1
	}
	t.Run("pages", func(t *testing.T) {
		s := newStack(t, stackOptions{rules: renamedScale, direct: true, dArgs: []string{"--slack-coalesce", "0s"}})
		attack(s)
		want := map[string]string{"203.0.113.201": "SEV3 #9e9e9e", "203.0.113.202": "SEV2 warning", "203.0.113.203": "SEV1 danger"}
		for range want {
			page := nextPost(t, s)
			ip, got := "", ""
			for candidate := range want {
				if strings.Contains(page.Get("text"), candidate) {
					ip = candidate
				}
			}
			for _, sev := range []string{"SEV1", "SEV2", "SEV3"} {
				if strings.HasPrefix(page.Get("text"), sev) || strings.Contains(page.Get("text"), " "+sev+" ") {
					got = sev
				}
			}
			got += " " + colourOf(t, page)
			if ip == "" || got != want[ip] {
				t.Errorf("page %q: %s, want %s", page.Get("text"), got, want[ip])
			}
		}
	})
	t.Run("burst summary", func(t *testing.T) {
		s := newStack(t, stackOptions{rules: renamedScale, direct: true, dArgs: []string{"--slack-coalesce", "3s"}})
		attack(s)
		page := nextPost(t, s)
		if text := page.Get("text"); !strings.Contains(text, "SEV1") || colourOf(t, page) != "danger" {
			t.Errorf("the burst's summary: %q coloured %s, want SEV1 in red", text, colourOf(t, page))
		}
		for _, offender := range []string{"`203.0.113.202` 5 attempts (SEV2)", "`203.0.113.201` 5 attempts (SEV3)"} {
			if !strings.Contains(page.Get("attachments"), offender) {
				t.Errorf("the summary does not list %s: %s", offender, page.Get("attachments"))
			}
		}
	})
}

func nextPost(t *testing.T, s *stack) url.Values {
	t.Helper()
	select {
	case page := <-s.slack.posts:
		return page
	case <-time.After(15 * time.Second):
		t.Fatal("no Slack page within 15 s")
	}
	return nil
}

// colourOf is the colour of a page's attachment.
func colourOf(t *testing.T, page url.Values) string {
	t.Helper()
	att := page.Get("attachments")
	i := strings.Index(att, `"color":"`)
	if i < 0 {
		t.Fatalf("page without a colour: %s", att)
	}
	rest := att[i+len(`"color":"`):]
	return rest[:strings.Index(rest, `"`)]
}

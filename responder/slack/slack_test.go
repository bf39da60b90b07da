package slack

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
)

var at = time.Date(2026, 11, 22, 10, 0, 4, 0, time.UTC)

func blockAction(sev string) responder.Action {
	return responder.Action{
		Decision: detector.Decision{Time: at, Rule: "failed-login-burst", Key: "203.0.113.7", IP: netip.MustParseAddr("203.0.113.7"),
			Kind: detector.KindBlock, TTL: 5 * time.Minute, Severity: sev, Count: 5, RatePerMinute: 5,
			FirstSeen: at.Add(-4 * time.Second), LastSeen: at, Alert: true, Match: "auth_failed", Threshold: 5, Window: 24 * time.Hour,
			Sample: `{"action":"auth_failed","client_ip":"203.0.113.7"}`},
		At: at, Blocked: true, Expires: at.Add(5 * time.Minute),
	}
}

// capture serves chat.postMessage like Slack and hands each form to posts.
func capture(posts chan url.Values, status int) slacktest.Binder {
	return func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			if status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(status)
				return
			}
			posts <- r.PostForm
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": r.PostForm.Get("channel"), "ts": "1700000000.000100"})
		})
	}
}

func TestBotTokenPageNamesIPRuleCountAndExpiry(t *testing.T) {
	posts := make(chan url.Values, 1)
	srv := slacktest.NewTestServer(capture(posts, 200))
	srv.Start()
	defer srv.Stop()
	n, err := New(Options{Token: "xoxb-test", Channel: "#security", APIURL: srv.GetAPIURL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(context.Background(), blockAction("P3")); err != nil {
		t.Fatal(err)
	}
	form := <-posts
	text := form.Get("text")
	for _, want := range []string{"P3", "203.0.113.7", "failed-login-burst", "5 failed attempts", "2026-11-22 10:05:04 UTC"} {
		if !strings.Contains(text, want) {
			t.Errorf("page text %q lacks %q", text, want)
		}
	}
	var atts []slack.Attachment
	if err := json.Unmarshal([]byte(form.Get("attachments")), &atts); err != nil || len(atts) != 1 {
		t.Fatalf("attachments %q: %v", form.Get("attachments"), err)
	}
	if atts[0].Color != "#9e9e9e" || form.Get("channel") != "#security" {
		t.Errorf("colour %q channel %q", atts[0].Color, form.Get("channel"))
	}
}

func TestColourFollowsSeverity(t *testing.T) {
	for sev, want := range map[string]string{"P1": "danger", "P2": "warning", "P3": "#9e9e9e"} {
		if got := Render(blockAction(sev)).Attachment.Color; got != want {
			t.Errorf("%s colour %q, want %q", sev, got, want)
		}
	}
}

func TestRateLimitCarriesRetryAfter(t *testing.T) {
	srv := slacktest.NewTestServer(capture(nil, http.StatusTooManyRequests))
	srv.Start()
	defer srv.Stop()
	n, _ := New(Options{Token: "xoxb-test", Channel: "#security", APIURL: srv.GetAPIURL()})
	err := n.Notify(context.Background(), blockAction("P1"))
	ra, ok := err.(interface{ RetryAfter() time.Duration })
	if !ok || ra.RetryAfter() != 7*time.Second {
		t.Fatalf("err %v: want a 7 s retry-after", err)
	}
}

func TestTerminalPageWhenNoSlackConfigured(t *testing.T) {
	var b strings.Builder
	n, err := New(Options{Terminal: &b})
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(context.Background(), blockAction("P3"))
	for _, want := range []string{"P3 — Failed login burst", "203.0.113.7", "until 2026-11-22 10:05:04 UTC"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("terminal page lacks %q:\n%s", want, b.String())
		}
	}
}

func TestNoDestinationIsAnError(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("accepted a notifier with nowhere to page")
	}
	if _, err := New(Options{Token: "x"}); err == nil {
		t.Error("accepted a token without a channel")
	}
}

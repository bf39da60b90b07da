package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Unblock button on a page, pressed in Slack: a forged press changes
// nothing; a signed one deletes both runbook keys, gives the IP a clean
// slate in the detector (five fresh attempts) and updates the page.
func TestSlackUnblockButton(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "signing-secret")
	const secret = "e2e-signing-secret"
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	slackAt := freeAddr(t)
	s := newStack(t, stackOptions{ttl: "300s", dArgs: []string{"--slack-signing-secret-file", secretFile, "--slack-coalesce", "0s", "--slack-listen", slackAt}})
	ctx := context.Background()
	ip := "203.0.113.140"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	var page url.Values
	select {
	case page = <-s.slack.posts:
	case <-time.After(15 * time.Second):
		t.Fatal("no Slack page within 15 s")
	}
	if !strings.Contains(page.Get("attachments"), "authguard_unblock") {
		t.Fatalf("the page offers no Unblock button: %s", page.Get("attachments"))
	}
	ts := "1700000000.000100"
	forged := slackPress(t, "wrong-secret", ip, ts)
	if code := forged(slackAt); code != http.StatusUnauthorized {
		t.Fatalf("forged press answered %d, want 401", code)
	}
	if !s.exists("ip_block:" + ip) {
		t.Fatal("a forged press unblocked the IP")
	}
	if code := slackPress(t, secret, ip, ts)(slackAt); code != http.StatusOK {
		t.Fatalf("signed press answered %d", code)
	}
	if s.exists("ip_block:"+ip) || s.exists("login_fail:"+ip) {
		t.Fatal("the press left a runbook key behind")
	}
	s.expectCleanSlate(ip, "the Unblock button")
	// The evidence names who pressed it.
	msgs, _ := s.rdb.XRange(ctx, "authguard:evidence", "-", "+").Result()
	found := false
	for _, m := range msgs {
		if evidenceField(m, "action") == "unblock" && evidenceField(m, "operator") == "slack:alice" {
			found = true
		}
	}
	if !found {
		t.Error("no evidence record of the unblock by slack:alice")
	}
}

// slackPress returns a function that sends Slack's request for a press of
// the Unblock button for ip to a daemon, signed with key, and answers the
// status.
func slackPress(t *testing.T, key, ip, ts string) func(daemonAt string) int {
	return func(daemonAt string) int {
		t.Helper()
		payload, _ := json.Marshal(map[string]any{
			"type":      "block_actions",
			"user":      map[string]string{"id": "U1", "name": "alice"},
			"channel":   map[string]string{"id": "#security"},
			"container": map[string]string{"type": "message", "message_ts": ts},
			"actions":   []map[string]string{{"action_id": "authguard_unblock", "block_id": "authguard_actions", "value": ip, "type": "button"}},
		})
		body := "payload=" + url.QueryEscape(string(payload))
		stamp := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte("v0:" + stamp + ":" + body))
		req, _ := http.NewRequest(http.MethodPost, "http://"+daemonAt+"/slack/interactions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", stamp)
		req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}

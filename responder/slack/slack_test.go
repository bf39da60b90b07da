package slack

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var at = time.Date(2026, 11, 22, 10, 0, 4, 0, time.UTC)

func blockAction(sev string) responder.Action {
	return ipAction("203.0.113.7", sev, 5)
}

// playbookRank is sev's place in the playbook's scale (P1 first), as the
// engine ranks it.
func playbookRank(sev string) int {
	for i, l := range detector.DefaultSeverity {
		if l.Level == sev {
			return i
		}
	}
	return len(detector.DefaultSeverity)
}

func ipAction(ip, sev string, count int) responder.Action {
	return responder.Action{
		Decision: detector.Decision{Time: at, Rule: "failed-login-burst", Key: ip, Net: blockset.Host(netip.MustParseAddr(ip)),
			Kind: detector.KindBlock, TTL: 5 * time.Minute, Severity: sev, SeverityRank: playbookRank(sev), Count: count, RatePerMinute: float64(count),
			FirstSeen: at.Add(-4 * time.Second), LastSeen: at, Alert: true, Match: "auth_failed", Threshold: 5, Window: 24 * time.Hour,
			Sample: `{"action":"auth_failed","client_ip":"` + ip + `","username":"alice"}`},
		At: at, Act: responder.ActBlock, Expires: at.Add(5 * time.Minute), Incident: "1795398025343-" + ip,
	}
}

// call is one request the fake Slack answered.
type call struct {
	method string // chat.postMessage or chat.update
	form   url.Values
}

// fakeSlack is slacktest serving chat.postMessage and chat.update like
// Slack (a channel ID and a ts per message), recording what it answered
// 200 and failing calls as fail says.
type fakeSlack struct {
	srv   *slacktest.Server
	mu    sync.Mutex
	calls []call
	tries int
	fail  func(try int) (status int, retryAfter string) // status 0: answer
	seen  chan struct{}
}

func newFakeSlack(t *testing.T, fail func(int) (int, string)) *fakeSlack {
	f := &fakeSlack{fail: fail, seen: make(chan struct{}, 10000)}
	handle := func(method string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			f.mu.Lock()
			f.tries++
			try := f.tries
			f.mu.Unlock()
			if f.fail != nil {
				if status, ra := f.fail(try); status != 0 {
					if ra != "" {
						w.Header().Set("Retry-After", ra)
					}
					w.WriteHeader(status)
					return
				}
			}
			f.mu.Lock()
			f.calls = append(f.calls, call{method, r.PostForm})
			n := len(f.calls)
			f.mu.Unlock()
			ts := r.PostForm.Get("ts")
			if method == "chat.postMessage" {
				ts = fmt.Sprintf("1700000000.%06d", n)
			}
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": "C" + strings.TrimPrefix(r.PostForm.Get("channel"), "#"), "ts": ts})
			f.seen <- struct{}{}
		}
	}
	f.srv = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", handle("chat.postMessage"))
		c.Handle("/chat.update", handle("chat.update"))
	})
	f.srv.Start()
	t.Cleanup(f.srv.Stop)
	return f
}

// await waits until n calls in all have been answered.
func (f *fakeSlack) await(t *testing.T, n int) []call {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		f.mu.Lock()
		got := len(f.calls)
		f.mu.Unlock()
		if got >= n {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]call(nil), f.calls...)
		}
		select {
		case <-f.seen:
		case <-deadline:
			t.Fatalf("Slack saw %d calls, want %d", got, n)
		}
	}
}

// topLevel are the posts that are not thread replies.
func topLevel(calls []call) []call {
	var out []call
	for _, c := range calls {
		if c.method == "chat.postMessage" && c.form.Get("thread_ts") == "" {
			out = append(out, c)
		}
	}
	return out
}

// start runs a notifier whose clock stands at the fixtures' time, until the
// test ends.
func start(t *testing.T, opts Options) *Notifier {
	t.Helper()
	n, stop := run(t, opts)
	t.Cleanup(stop)
	return n
}

// run runs a notifier whose clock stands at the fixtures' time; stop ends
// it and waits for it.
func run(t *testing.T, opts Options) (n *Notifier, stop func()) {
	t.Helper()
	opts.Now = func() time.Time { return at }
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	return n, func() { cancel(); <-done }
}

func attachment(t *testing.T, form url.Values) slack.Attachment {
	t.Helper()
	var atts []slack.Attachment
	if err := json.Unmarshal([]byte(form.Get("attachments")), &atts); err != nil || len(atts) != 1 {
		t.Fatalf("attachments %q: %v", form.Get("attachments"), err)
	}
	return atts[0]
}

func TestBotTokenPageNamesIPRuleCountAndExpiry(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1})
	n.Notify(context.Background(), blockAction("P3"))
	form := f.await(t, 1)[0].form
	text := form.Get("text")
	for _, want := range []string{"P3 — Brute force", "203.0.113.7", "failed-login-burst", "5 failed attempts", "2026-11-22 10:05:04 UTC"} {
		if !strings.Contains(text, want) {
			t.Errorf("page text %q lacks %q", text, want)
		}
	}
	if a := attachment(t, form); a.Color != "#9e9e9e" || form.Get("channel") != "#security" {
		t.Errorf("colour %q channel %q", a.Color, form.Get("channel"))
	}
}

// Must show 1: an incident that escalates P3 → P2 → P1 is one message,
// updated twice, with a thread reply for each escalation.
func TestEscalationUpdatesTheMessageAndRepliesInItsThread(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1})
	ctx := context.Background()
	n.Notify(ctx, ipAction("203.0.113.7", "P3", 5))
	f.await(t, 1)
	for i, sev := range []string{"P2", "P1"} {
		a := ipAction("203.0.113.7", sev, 60*(i+1))
		a.Decision.Escalation, a.Decision.Renewal = true, true
		n.Notify(ctx, a)
		f.await(t, 1+2*(i+1))
	}
	calls := f.await(t, 5)
	if top := topLevel(calls); len(top) != 1 {
		t.Fatalf("%d top-level messages, want 1", len(top))
	}
	var updates, replies []call
	for _, c := range calls {
		switch {
		case c.method == "chat.update":
			updates = append(updates, c)
		case c.form.Get("thread_ts") != "":
			replies = append(replies, c)
		}
	}
	if len(updates) != 2 || len(replies) != 2 {
		t.Fatalf("%d updates and %d replies, want 2 and 2", len(updates), len(replies))
	}
	for _, u := range updates {
		if u.form.Get("ts") != "1700000000.000001" || u.form.Get("channel") != "Csecurity" {
			t.Errorf("update of ts %q in %q, want the first message", u.form.Get("ts"), u.form.Get("channel"))
		}
	}
	if got := attachment(t, updates[1].form); got.Color != "danger" || !strings.Contains(updates[1].form.Get("text"), "P1 — Brute force (escalated)") {
		t.Errorf("last update: colour %q text %q", got.Color, updates[1].form.Get("text"))
	}
	if !strings.Contains(replies[0].form.Get("text"), "Escalated P3 → P2") || !strings.Contains(replies[1].form.Get("text"), "Escalated P2 → P1") {
		t.Errorf("replies %q, %q", replies[0].form.Get("text"), replies[1].form.Get("text"))
	}
	if replies[0].form.Get("thread_ts") != "1700000000.000001" {
		t.Errorf("reply in thread %q, want the incident's message", replies[0].form.Get("thread_ts"))
	}
}

// The thread tells how the block ended: on its own at its expiry, or by
// an operator's unblock.
func TestBlockExpiryAndUnblockAreRepliedInTheThread(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1, Buttons: true})
	ctx := context.Background()
	expiring := ipAction("203.0.113.21", "P3", 5)
	expiring.Expires = at.Add(-time.Second) // ended by the time it is paged
	n.Notify(ctx, expiring)
	calls := f.await(t, 3)
	if calls[1].method != "chat.update" || strings.Contains(calls[1].form.Get("attachments"), ActionUnblock) {
		t.Errorf("expired page: %s still offering Unblock: %v", calls[1].method, strings.Contains(calls[1].form.Get("attachments"), ActionUnblock))
	}
	if r := calls[2].form; r.Get("thread_ts") != calls[1].form.Get("ts") || !strings.HasPrefix(r.Get("text"), "Block expired at ") {
		t.Errorf("expiry reply %v", r)
	}

	n.Notify(ctx, ipAction("203.0.113.22", "P3", 5)) // stands
	f.await(t, 4)
	n.Unblocked(blockset.Host(netip.MustParseAddr("203.0.113.22")), "bob")
	calls = f.await(t, 6)
	if r := calls[5].form; r.Get("thread_ts") != "1700000000.000004" || !strings.HasPrefix(r.Get("text"), "Unblocked by bob at ") {
		t.Errorf("unblock reply %v", r)
	}
	n.Unblocked(blockset.Host(netip.MustParseAddr("203.0.113.99")), "bob") // nothing paged about it
	n.Notify(ctx, ipAction("203.0.113.23", "P3", 5))
	if calls = f.await(t, 7); len(calls) != 7 || topLevel(calls)[2].form.Get("text") == "" {
		t.Errorf("an unblock of an unpaged IP touched Slack: %d calls", len(calls))
	}
}

// kept is a Messages that outlives notifiers, like Redis does.
type kept struct {
	mu    sync.Mutex
	ats   map[string][2]string // ip/incident -> channel, ts
	saved chan struct{}
}

func (k *kept) SaveMessage(_ context.Context, ip netip.Prefix, incident, channel, ts string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ats[blockset.Target(ip)+"/"+incident] = [2]string{channel, ts}
	k.saved <- struct{}{}
	return nil
}

func (k *kept) LoadMessage(_ context.Context, ip netip.Prefix, incident string) (string, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	at := k.ats[blockset.Target(ip)+"/"+incident]
	return at[0], at[1], nil
}

// After a restart (a new notifier), an escalation of an incident paged
// before updates that page and replies in its thread: still one message.
func TestAnEscalationAfterARestartUpdatesThePage(t *testing.T) {
	f := newFakeSlack(t, nil)
	store := &kept{ats: map[string][2]string{}, saved: make(chan struct{}, 1)}
	opts := Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1, Messages: store}
	first, stop := run(t, opts)
	first.Notify(context.Background(), ipAction("203.0.113.7", "P3", 5))
	<-store.saved // the page is posted and where it is kept
	stop()

	restarted := start(t, opts)
	esc := ipAction("203.0.113.7", "P2", 60)
	esc.Decision.Escalation, esc.Decision.Renewal = true, true
	restarted.Notify(context.Background(), esc)
	calls := f.await(t, 3)
	if len(topLevel(calls)) != 1 {
		t.Fatalf("%d top-level messages, want the one from before the restart", len(topLevel(calls)))
	}
	if calls[1].method != "chat.update" || calls[1].form.Get("ts") != "1700000000.000001" {
		t.Errorf("after the restart: %s of ts %q, want an update of the first page", calls[1].method, calls[1].form.Get("ts"))
	}
	if r := calls[2].form; r.Get("thread_ts") != "1700000000.000001" || !strings.HasPrefix(r.Get("text"), "Escalated to P2") {
		t.Errorf("reply %v", r)
	}
}

// Must show 2: a thousand IPs blocked in a burst are a summary that names
// the count, posted once and updated as the burst grows.
func TestABurstOfBlocksIsCoalescedIntoOneSummary(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: 50 * time.Millisecond, Queue: 2000})
	ctx := context.Background()
	calls := 0
	for chunk := range 10 {
		for i := range 100 {
			k := chunk*100 + i
			n.Notify(ctx, ipAction(fmt.Sprintf("198.51.%d.%d", k/256, k%256), "P3", 5+k%7))
		}
		calls++
		f.await(t, calls)
	}
	all := f.await(t, calls)
	top := topLevel(all)
	if len(top) > 3 {
		t.Fatalf("%d top-level posts for one burst, want at most 3", len(top))
	}
	last := all[len(all)-1]
	if !strings.Contains(last.form.Get("text"), "1000 IPs blocked by failed-login-burst") {
		t.Errorf("the summary says %q, want the count of 1000", last.form.Get("text"))
	}
	if !strings.Contains(last.form.Get("attachments"), "11 attempts") {
		t.Errorf("the summary names no top offender: %s", last.form.Get("attachments"))
	}
	if got := len(all); got > 12 {
		t.Errorf("%d Slack calls for a burst, want a summary and its updates", got)
	}
}

// Must show 3: rate limits and a storm of server errors delay pages but
// lose none and post none twice.
func TestRateLimitsAndServerErrorsLoseNoPageAndDuplicateNone(t *testing.T) {
	// A 429 first, then server errors until the test has seen forty of
	// them and ends the storm.
	release := make(chan struct{})
	var failures sync.WaitGroup
	failures.Add(40)
	f := newFakeSlack(t, func(try int) (int, string) {
		switch {
		case try == 1:
			return http.StatusTooManyRequests, "1"
		case try <= 41:
			failures.Done()
			return http.StatusInternalServerError, ""
		}
		select {
		case <-release:
			return 0, ""
		default:
			return http.StatusServiceUnavailable, ""
		}
	})
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1,
		RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	ctx := context.Background()
	ips := []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"}
	for _, ip := range ips {
		n.Notify(ctx, ipAction(ip, "P2", 5))
	}
	failures.Wait() // the storm has been felt...
	close(release)  // ...and ends
	calls := f.await(t, len(ips))
	seen := map[string]int{}
	for _, c := range topLevel(calls) {
		for _, ip := range ips {
			if strings.Contains(c.form.Get("text"), ip+",") {
				seen[ip]++
			}
		}
	}
	for _, ip := range ips {
		if seen[ip] != 1 {
			t.Errorf("page for %s posted %d times, want once", ip, seen[ip])
		}
	}
	if got := testutil.ToFloat64(n.metrics.rateLimited); got < 1 {
		t.Errorf("rate limit not counted")
	}
}

func TestSeverityRoutesToItsChannelWithAMention(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1,
		Routes: map[string]string{"P1": "#incidents", "P3": "#security-log"}, Mentions: map[string]string{"P1": "<!here>"}})
	n.Notify(context.Background(), ipAction("203.0.113.1", "P1", 500))
	n.Notify(context.Background(), ipAction("203.0.113.2", "P3", 5))
	calls := f.await(t, 2)
	if c := calls[0].form; c.Get("channel") != "#incidents" || !strings.HasPrefix(c.Get("text"), "<!here> P1") {
		t.Errorf("P1 went to %q as %q", c.Get("channel"), c.Get("text"))
	}
	if c := calls[1].form; c.Get("channel") != "#security-log" || strings.Contains(c.Get("text"), "<!here>") {
		t.Errorf("P3 went to %q as %q", c.Get("channel"), c.Get("text"))
	}
}

// operatorLog records what the buttons asked for.
type operatorLog struct {
	mu  sync.Mutex
	did []string
}

func (o *operatorLog) Unblock(_ context.Context, ip netip.Prefix, operator, reason string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.did = append(o.did, "unblock "+blockset.Target(ip)+" by "+operator)
	return nil
}

func (o *operatorLog) Extend(_ context.Context, ip netip.Prefix, ttl time.Duration, operator, reason string) (time.Time, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.did = append(o.did, "extend "+blockset.Target(ip)+" "+ttl.String()+" by "+operator)
	return at.Add(ttl), nil
}

func (o *operatorLog) actions() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.did...)
}

const secret = "8f742231b10e8888abcd99yyyzzz85a5"

// press builds Slack's request for a button press on message ts, signed
// with key at the given time.
func press(t *testing.T, key string, when time.Time, action, ip, ts string) *http.Request {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{
		"type":      "block_actions",
		"user":      map[string]string{"id": "U123", "name": "alice"},
		"channel":   map[string]string{"id": "Csecurity"},
		"container": map[string]string{"type": "message", "message_ts": ts, "channel_id": "Csecurity"},
		"message":   map[string]string{"ts": ts},
		"actions":   []map[string]string{{"action_id": action, "value": ip, "type": "button", "block_id": "authguard_actions"}},
	})
	body := "payload=" + url.QueryEscape(string(payload))
	stamp := strconv.FormatInt(when.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte("v0:" + stamp + ":" + body))
	r := httptest.NewRequest(http.MethodPost, "/slack/interactions", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Slack-Request-Timestamp", stamp)
	r.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	return r
}

// Must show 4: a forged or stale press is refused and changes nothing; a
// valid one is carried out, and the message shows who did it.
func TestButtonsAreVerifiedCarriedOutAndShown(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1, Buttons: true})
	n.Notify(context.Background(), blockAction("P2"))
	page := f.await(t, 1)[0]
	if !strings.Contains(page.form.Get("attachments"), ActionUnblock) || !strings.Contains(page.form.Get("attachments"), ActionExtend) {
		t.Fatalf("the page has no buttons: %s", page.form.Get("attachments"))
	}
	ops := &operatorLog{}
	h := n.Interactions(secret, ops)
	ts := "1700000000.000001"
	for name, r := range map[string]*http.Request{
		"forged":          press(t, "not-the-secret", time.Now(), ActionUnblock, "203.0.113.7", ts),
		"six minutes old": press(t, secret, time.Now().Add(-6*time.Minute), ActionUnblock, "203.0.113.7", ts),
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s press answered %d, want 401", name, w.Code)
		}
	}
	if got := ops.actions(); len(got) != 0 {
		t.Fatalf("a refused press did %v", got)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, press(t, secret, time.Now(), ActionUnblock, "203.0.113.7", ts))
	if w.Code != http.StatusOK {
		t.Fatalf("valid press answered %d: %s", w.Code, w.Body)
	}
	if got := ops.actions(); len(got) != 1 || got[0] != "unblock 203.0.113.7 by slack:alice" {
		t.Fatalf("operator did %v", got)
	}
	calls := f.await(t, 3)
	upd, reply := calls[1], calls[2]
	if upd.method != "chat.update" || upd.form.Get("ts") != ts || !strings.Contains(upd.form.Get("attachments"), "Unblocked by \\u003c@U123\\u003e") && !strings.Contains(upd.form.Get("attachments"), "Unblocked by <@U123>") {
		t.Errorf("the message was not updated with the unblock: %s %v", upd.method, upd.form)
	}
	if strings.Contains(upd.form.Get("attachments"), ActionUnblock) {
		t.Error("the unblocked page still offers Unblock")
	}
	if reply.form.Get("thread_ts") != ts || !strings.Contains(reply.form.Get("text"), "Unblocked by <@U123>") {
		t.Errorf("thread reply %v", reply.form)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, press(t, secret, time.Now(), ActionExtend, "203.0.113.7", ts))
	if got := ops.actions(); w.Code != http.StatusOK || len(got) != 2 || got[1] != "extend 203.0.113.7 24h0m0s by slack:alice" {
		t.Fatalf("extend: %d, operator did %v", w.Code, got)
	}
}

// Must show 5: the rendered Block Kit of each severity, kept as golden
// files that reviewers can read (go test -run Golden -update rewrites them).
func TestGoldenBlockKit(t *testing.T) {
	stuffing := ipAction("198.51.100.23", "P1", 412)
	stuffing.Decision.Rule, stuffing.Decision.Match, stuffing.Decision.Distinct, stuffing.Decision.RatePerMinute = "credential-stuffing", "", 37, 137.3
	enumeration := ipAction("2001:db8::", "P2", 180)
	enumeration.Decision.Key = "2001:db8::/64"
	enumeration.Decision.Rule, enumeration.Decision.Distinct, enumeration.Decision.RatePerMinute = "account-enumeration", 51, 60
	pages := map[string]struct {
		a responder.Action
		p Page
	}{
		"P1": {stuffing, Page{Samples: []string{stuffing.Decision.Sample, stuffing.Decision.Sample}, Buttons: true, MaskUsernames: true,
			Explore:   &Explore{URL: "https://grafana.example.com", Datasource: "loki-uid", Selector: `{service="audit"}`},
			PerMinute: []int{3, 41, 0, 137, 120, 111}}},
		"P2": {enumeration, Page{Samples: []string{enumeration.Decision.Sample}, Buttons: true}},
		"P3": {blockAction("P3"), Page{Samples: []string{blockAction("P3").Decision.Sample}, Buttons: true, Status: "Extended by 24 h by <@U123>"}},
	}
	for sev, pg := range pages {
		t.Run(sev, func(t *testing.T) {
			m := Render(pg.a, pg.p)
			got, err := json.MarshalIndent(map[string]any{"text": m.Text, "attachments": []slack.Attachment{m.Attachment}}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "page_"+sev+".json")
			if *update {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run Golden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered page differs from %s (go test -run Golden -update, then review the diff):\n%s", path, got)
			}
		})
	}
}

// attemptsFrom answers attempts per minute like Loki would, and records
// what it was asked.
type attemptsFrom struct {
	mu    sync.Mutex
	asked []string
}

func (a *attemptsFrom) AttemptsPerMinute(_ context.Context, key string, from, to time.Time) ([]int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, key+" "+from.Format(time.TimeOnly)+"-"+to.Format(time.TimeOnly))
	return []int{1, 4, 2}, nil
}

func TestPagesDrawAttemptsPerMinute(t *testing.T) {
	f := newFakeSlack(t, nil)
	src := &attemptsFrom{}
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1, Attempts: src})
	n.Notify(context.Background(), blockAction("P3"))
	page := f.await(t, 1)[0]
	if !strings.Contains(page.form.Get("attachments"), "*Attempts per minute*\\n`▃█▅` peak 4 over 3 min") {
		t.Errorf("no sparkline on the page: %s", page.form.Get("attachments"))
	}
	if src.asked[0] != "203.0.113.7 10:00:00-10:00:04" {
		t.Errorf("asked for %v, want the incident's key and span", src.asked)
	}
}

// growing answers more attempts every time it is asked about 198.51.100.9,
// and the same for everyone else.
type growing struct {
	mu    sync.Mutex
	calls int
}

func (g *growing) AttemptsPerMinute(_ context.Context, key string, _, _ time.Time) ([]int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if key != "198.51.100.9" {
		return []int{5}, nil
	}
	g.calls++
	return []int{5, 10 * g.calls}, nil
}

// An incident that goes on (here a dry run: nothing blocks the attacker)
// has its page redrawn with the attempts that came since; a page whose
// attempts stopped is left alone.
func TestOpenIncidentsAreRedrawnAsAttemptsGrow(t *testing.T) {
	f := newFakeSlack(t, nil)
	n := start(t, Options{Transport: Bot("xoxb-test", f.srv.GetAPIURL()), Channel: "#security", Coalesce: -1,
		Attempts: &growing{}, Refresh: 20 * time.Millisecond})
	dry := ipAction("198.51.100.9", "P3", 5)
	dry.Act = responder.ActDryRun
	n.Notify(context.Background(), blockAction("P3")) // stands, attempts stopped
	n.Notify(context.Background(), dry)
	calls := f.await(t, 4)
	for _, c := range calls[2:] {
		if c.method != "chat.update" || c.form.Get("ts") != "1700000000.000002" {
			t.Fatalf("redrew %s %v, want only the dry run's page", c.method, c.form.Get("ts"))
		}
	}
	if !strings.Contains(calls[3].form.Get("attachments"), "peak 30 over 2 min") {
		t.Errorf("the redrawn page does not show the new attempts: %s", calls[3].form.Get("attachments"))
	}
}

func TestSparkline(t *testing.T) {
	for _, tt := range []struct {
		counts []int
		want   string
	}{
		{[]int{0, 1, 7, 14}, "`▁▂▅█` peak 14 over 4 min"},
		{[]int{5}, "`█` peak 5 over 1 min"},
		{[]int{0, 0}, "`▁▁` peak 0 over 2 min"},
	} {
		if got := Sparkline(tt.counts); got != tt.want {
			t.Errorf("Sparkline(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

func TestColourFollowsSeverity(t *testing.T) {
	for sev, want := range map[string]string{"P1": "danger", "P2": "warning", "P3": "#9e9e9e"} {
		if got := Render(blockAction(sev), Page{}).Attachment.Color; got != want {
			t.Errorf("%s colour %q, want %q", sev, got, want)
		}
	}
}

func TestUsernamesCanBeMasked(t *testing.T) {
	got := MaskUsernames(`{"action":"auth_failed","username":"alice@example.com","client_ip":"203.0.113.7"}`)
	if strings.Contains(got, "alice") || !strings.Contains(got, `"username":"a***"`) {
		t.Errorf("masked line %s", got)
	}
}

// lines passes each write on, so that a test can await a page.
type lines chan string

func (l lines) Write(p []byte) (int, error) { l <- string(p); return len(p), nil }

func TestTerminalPageWhenNoSlackConfigured(t *testing.T) {
	out := make(lines, 10)
	n := start(t, Options{Transport: Terminal(out), Coalesce: -1})
	n.Notify(context.Background(), blockAction("P3"))
	page := <-out
	for _, want := range []string{"P3 — Brute force", "203.0.113.7", "until 2026-11-22 10:05:04 UTC"} {
		if !strings.Contains(page, want) {
			t.Errorf("terminal page lacks %q:\n%s", want, page)
		}
	}
}

func TestNoDestinationIsAnError(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("accepted a notifier with nowhere to page")
	}
	if _, err := New(Options{Transport: Bot("x", "")}); err == nil {
		t.Error("accepted a token without a channel")
	}
}

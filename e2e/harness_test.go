// Package e2e runs the built authguard binaries against a real redis-server
// that each test starts on a free port, the fake Loki (or a real one named by
// LOKI_URL) and slacktest.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/slack-go/slack/slacktest"

	"github.com/authguard/authguard/detector/loki/lokitest"
)

var binDir string

// startRealLoki is set by real_test.go (-tags real): it starts a real Loki
// and points LOKI_URL and LOKI_TENANT at it.
var startRealLoki func(dir string) (stop func(), err error)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "authguard-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, name := range []string{"authguard", "authguard-gateway", "authguard-demo"} {
		cmd := exec.Command("go", "build", "-race", "-o", filepath.Join(dir, name), "../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", name+":", err)
			os.Exit(1)
		}
	}
	stopLoki := func() {}
	if startRealLoki != nil {
		// make test-real: the whole suite against a real Loki.
		if stopLoki, err = startRealLoki(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	stopLoki()
	os.RemoveAll(dir)
	os.Exit(code)
}

// eventually polls cond until it holds or the deadline passes. It awaits an
// observable state (a Redis key, an HTTP answer, a metric); it never stands
// in for one.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	handedOut.mu.Lock()
	defer handedOut.mu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		// The kernel may give a port closed a moment ago again: two parts
		// of one stack must never be handed the same address.
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
}

// handedOut are the addresses freeAddr has given in this test binary.
var handedOut = struct {
	mu    sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// redisServer is a private redis-server on a free port; tests never touch
// another Redis.
type redisServer struct {
	t    testing.TB
	addr string
	dir  string
	args []string
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func startRedisServer(t testing.TB, extra ...string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run `make test`, which installs it, or apt-get install -y redis-server")
	}
	r := &redisServer{t: t, addr: freeAddr(t), dir: t.TempDir(), args: extra}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisServer) url() string { return "redis://" + r.addr + "/0" }

func (r *redisServer) port() string { _, p, _ := net.SplitHostPort(r.addr); return p }

// start (re)starts the server on its port, empty: it keeps nothing on disk.
func (r *redisServer) start() {
	r.t.Helper()
	args := append([]string{"--port", r.port(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir}, r.args...)
	r.cmd = exec.Command("redis-server", args...)
	r.out.Reset()
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr})
	defer c.Close()
	eventually(r.t, 10*time.Second, "redis-server to answer PING", func() bool { return c.Ping(context.Background()).Err() == nil })
}

// stop kills the server (as a crash would) and waits for it.
func (r *redisServer) stop() {
	if r.cmd != nil && r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

func (r *redisServer) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.addr})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// process is a running binary whose output is kept for failure reports.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// expectJSONLog fails the test for each line of the process's output
// that is not one JSON object.
func (p *process) expectJSONLog(t testing.TB) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(p.output()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a line of %s's log is not JSON: %.300q", filepath.Base(p.cmd.Path), line)
		}
	}
}

// stop ends the process with SIGTERM and waits for it.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
}

// kill ends the process with SIGKILL, as the OOM killer or a node loss
// does, and waits for it.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// alive fails the test at once if the process has exited.
func (p *process) alive(t testing.TB) bool {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s exited early:\n%s", p.cmd.Path, p.output())
	default:
	}
	return true
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t testing.TB, name string, args ...string) *process {
	t.Helper()
	return startCmd(t, name, exec.Command(filepath.Join(binDir, name), args...))
}

// startCmd starts cmd (a binary of binDir, with its own environment, say)
// as start does.
func startCmd(t testing.TB, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := p.done
	go func() { p.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-exited
		}
		// The binaries are built with -race: a race in them fails the test.
		if strings.Contains(p.output(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

// lokiTarget is the Loki the stack uses: the fake, or LOKI_URL.
type lokiTarget struct {
	url, tenant string
	fake        *lokitest.Server
}

func newLoki(t testing.TB) lokiTarget {
	if u := os.Getenv("LOKI_URL"); u != "" {
		return lokiTarget{url: strings.TrimSuffix(u, "/"), tenant: os.Getenv("LOKI_TENANT")}
	}
	s := lokitest.New(lokitest.Options{})
	t.Cleanup(s.Close)
	return lokiTarget{url: s.URL, fake: s}
}

// push sends raw lines to Loki's push API (JSON), as a log shipper would.
func (l lokiTarget) push(t testing.TB, labels map[string]string, lines ...string) {
	t.Helper()
	var values [][2]string
	now := time.Now().UnixNano()
	for i, line := range lines {
		values = append(values, [2]string{strconv.FormatInt(now+int64(i), 10), line})
	}
	body, _ := json.Marshal(map[string]any{"streams": []any{map[string]any{"stream": labels, "values": values}}})
	req, _ := http.NewRequest("POST", l.url+"/loki/api/v1/push", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if l.tenant != "" {
		req.Header.Set("X-Scope-OrgID", l.tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("push: %s", resp.Status)
	}
}

type lokiEntry struct {
	labels map[string]string
	ts     int64
	line   string
}

// entries reads back every entry of a selector from the last hour with
// query_range (forward, paged), as logcli does.
func (l lokiTarget) entries(t testing.TB, selector string) []lokiEntry {
	t.Helper()
	var out []lokiEntry
	start := time.Now().Add(-time.Hour).UnixNano()
	seen := map[string]bool{}
	for {
		q := url.Values{"query": {selector}, "start": {strconv.FormatInt(start, 10)}, "end": {strconv.FormatInt(time.Now().UnixNano(), 10)},
			"limit": {"5000"}, "direction": {"forward"}}
		req, _ := http.NewRequest("GET", l.url+"/loki/api/v1/query_range?"+q.Encode(), nil)
		if l.tenant != "" {
			req.Header.Set("X-Scope-OrgID", l.tenant)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Data struct {
				Result []struct {
					Stream map[string]string `json:"stream"`
					Values [][2]string       `json:"values"`
				} `json:"result"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		n, last := 0, start
		for _, st := range r.Data.Result {
			for _, v := range st.Values {
				n++
				ts, _ := strconv.ParseInt(v[0], 10, 64)
				if key := v[0] + v[1]; !seen[key] {
					seen[key] = true
					out = append(out, lokiEntry{st.Stream, ts, v[1]})
				}
				last = max(last, ts)
			}
		}
		if n < 5000 {
			return out
		}
		start = last
	}
}

// slackPosts is a slacktest server that records chat.postMessage calls.
type slackPosts struct {
	srv     *slacktest.Server
	posts   chan url.Values
	updates chan url.Values
}

func newSlack(t testing.TB) *slackPosts {
	s := &slackPosts{posts: make(chan url.Values, 100), updates: make(chan url.Values, 100)}
	s.srv = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			s.posts <- r.PostForm
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": r.PostForm.Get("channel"), "ts": strconv.FormatInt(time.Now().UnixNano(), 10)})
		})
		c.Handle("/chat.update", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			s.updates <- r.PostForm
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": r.PostForm.Get("channel"), "ts": r.PostForm.Get("ts")})
		})
	})
	s.srv.Start()
	t.Cleanup(s.srv.Stop)
	return s
}

// stack is the whole loop: login app, gateway, daemon, Redis, Loki, Slack.
type stack struct {
	t          testing.TB
	client     *http.Client // to the gateway; nil: http.DefaultClient
	rdb        redis.UniversalClient
	keyPrefix  string // before the runbook's key names: "{authguard}" under Cluster
	redis      *redisServer
	loki       lokiTarget
	slack      *slackPosts
	run        string // label value isolating this test's streams
	gateway    string // base URL of the gateway
	gwAdmin    string
	daemon     *process
	daemonAt   string // admin address of the daemon
	daemonArgs []string
	rulesFile  string
	pushToken  string // the push receiver's token file, in direct mode
	pushAt     string // the push receiver's address, in direct mode
}

type stackOptions struct {
	redis     *redisServer // default: a new one
	rules     string       // a whole rules file; overrides ttl
	rulesPath string       // a rules file already in place; overrides rules
	dArgs     []string
	ttl       string
	query     string // LogQL; %s is replaced by the stream selector
	reconcile string // gateway --reconcile-interval (default 200ms)
	gwArgs    []string
	// direct has the gateway push audit lines straight to the daemon's
	// push receiver: no Loki at all.
	direct bool
	// pushD and pushGW, when set, replace direct mode's shared bearer
	// token: the daemon's push-receiver flags (--push-listen is added) and
	// the gateway's matching ones; pushHTTPS has the gateway push over TLS.
	pushD, pushGW []string
	pushHTTPS     bool
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	if o.ttl == "" {
		o.ttl = "2s"
	}
	if o.query == "" {
		o.query = `%s |= "auth_failed" | json | action="auth_failed"`
	}
	if o.reconcile == "" {
		o.reconcile = "200ms"
	}
	s := &stack{t: t, loki: newLoki(t), slack: newSlack(t)}
	s.redis = o.redis
	if s.redis == nil {
		s.redis = startRedisServer(t)
	}
	s.rdb = s.redis.client()
	b := make([]byte, 6)
	rand.Read(b)
	s.run = hex.EncodeToString(b)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && lenientRoute(r.URL.Path) == "/auth/login":
			var body struct{ Username, Password string }
			json.NewDecoder(r.Body).Decode(&body)
			if body.Password != "correct horse" {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":"invalid credentials"}`)
				return
			}
			io.WriteString(w, `{"token":"t"}`)
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(app.Close)

	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if o.rules == "" {
		o.rules = fmt.Sprintf(`rules:
  - name: failed-login-burst
    match: {action: auth_failed}
    group_by: client_ip
    window: 24h
    threshold: 5
    block: {ttl: %s}
    alert: true
`, o.ttl)
	}
	if o.rulesPath != "" {
		rules = o.rulesPath
	} else {
		os.WriteFile(rules, []byte(o.rules), 0o644)
	}
	s.rulesFile = rules
	token := filepath.Join(t.TempDir(), "slack-token")
	os.WriteFile(token, []byte("xoxb-e2e\n"), 0o600)

	redisURL := s.redis.url()
	s.daemonAt = freeAddr(t)
	pushTo := s.loki.url
	var gwPushAuth, dPushAuth []string
	if o.direct {
		s.pushAt = freeAddr(t)
		pushTo = "http://" + s.pushAt
		// The gateway and the daemon's push receiver share a token.
		s.pushToken = filepath.Join(t.TempDir(), "push-token")
		os.WriteFile(s.pushToken, []byte("e2e-push-token\n"), 0o600)
		gwPushAuth = []string{"--loki-bearer-token-file", s.pushToken}
		dPushAuth = []string{"--push-listen", s.pushAt, "--push-bearer-token-file", s.pushToken}
		if o.pushD != nil {
			gwPushAuth, dPushAuth = o.pushGW, append([]string{"--push-listen", s.pushAt}, o.pushD...)
		}
		if o.pushHTTPS {
			pushTo = "https://" + s.pushAt
		}
	}
	gwAddr, gwAdmin := freeAddr(t), freeAddr(t)
	s.gateway, s.gwAdmin = "http://"+gwAddr, "http://"+gwAdmin
	gwArgs := []string{"--listen", gwAddr, "--admin-listen", gwAdmin, "--upstream", app.URL, "--redis-url", redisURL,
		"--trusted-proxies", "127.0.0.1/32", "--reconcile-interval", o.reconcile, "--loki-push-url", pushTo,
		"--loki-labels", "run=" + s.run, "--log-format", "text"}
	if s.loki.tenant != "" && !o.direct { // in direct mode the gateway pushes to the daemon, not Loki
		gwArgs = append(gwArgs, "--loki-tenant", s.loki.tenant)
	}
	gwArgs = append(append(gwArgs, gwPushAuth...), o.gwArgs...)
	gw := start(t, "authguard-gateway", gwArgs...)

	selector := fmt.Sprintf(`{service="audit", run=%q}`, s.run)
	dArgs := []string{"run", "--rules", rules, "--redis-url", redisURL, "--listen", s.daemonAt,
		"--slack-token-file", token, "--slack-channel", "#security", "--slack-api-url", s.slack.srv.GetAPIURL(), "--log-format", "json"}
	if !o.direct {
		dArgs = append(dArgs, "--loki-url", s.loki.url, "--loki-query", fmt.Sprintf(o.query, selector))
		if s.loki.fake != nil {
			// The fake registers a tail before its handshake completes;
			// a real Loki needs the default settle time.
			dArgs = append(dArgs, "--loki-settle", "200ms")
		}
		if s.loki.tenant != "" {
			dArgs = append(dArgs, "--loki-tenant", s.loki.tenant)
		}
	}
	dArgs = append(append(dArgs, dPushAuth...), o.dArgs...)
	s.daemonArgs = dArgs
	s.daemon = start(t, "authguard", dArgs...)
	// Every line the daemon logs, in every test of the suite, is one JSON
	// record: go-redis's and client-go's own lines included.
	t.Cleanup(func() { s.daemon.expectJSONLog(t) })
	eventually(t, 20*time.Second, "the gateway to be ready", func() bool { return gw.alive(t) && httpStatus(s.gwAdmin+"/readyz") == 200 })
	eventually(t, 20*time.Second, "the daemon to tail Loki", func() bool { return s.daemon.alive(t) && httpStatus("http://"+s.daemonAt+"/readyz") == 200 })
	return s
}

// lenientRoute is how routers like Express, Rails and Spring match a
// path: without case, a trailing slash, repeated slashes, dot segments or
// path parameters. The login app routes with it, as such apps do.
func lenientRoute(p string) string {
	var segs []string
	for _, seg := range strings.Split(strings.ToLower(p), "/") {
		seg, _, _ = strings.Cut(seg, ";")
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	return "/" + strings.Join(segs, "/")
}

// restartDaemon stops the daemon, runs meanwhile while it is down, and
// starts it again with the same settings.
func (s *stack) restartDaemon(meanwhile func()) { s.restartDaemonBy((*process).stop, meanwhile) }

// restartDaemonBy is restartDaemon with the daemon stopped by stop.
func (s *stack) restartDaemonBy(stop func(*process), meanwhile func()) {
	s.t.Helper()
	stop(s.daemon)
	meanwhile()
	s.daemon = start(s.t, "authguard", s.daemonArgs...)
	eventually(s.t, 20*time.Second, "the restarted daemon to tail Loki", func() bool {
		return s.daemon.alive(s.t) && httpStatus("http://"+s.daemonAt+"/readyz") == 200
	})
}

func httpStatus(u string) int {
	resp, err := http.Get(u)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// answer is a response from the gateway.
type answer struct {
	status int
	header http.Header
	body   string
	proto  string // HTTP/1.1 or HTTP/2.0
}

// request sends a request through the gateway as if from client ip (the
// gateway trusts the loopback proxy's X-Forwarded-For).
func (s *stack) request(ip, method, path, body string) answer {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.gateway+path, strings.NewReader(body))
	req.Header.Set("X-Forwarded-For", ip)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := s.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b), resp.Proto}
}

func (s *stack) login(ip, password string) answer {
	return s.request(ip, "POST", "/auth/login", fmt.Sprintf(`{"username":"alice","password":%q}`, password))
}

func (s *stack) awaitBlocked(ip string) answer {
	s.t.Helper()
	var a answer
	eventually(s.t, 15*time.Second, ip+" to be refused with 403", func() bool {
		a = s.request(ip, "GET", "/health", "")
		return a.status == http.StatusForbidden
	})
	if !strings.Contains(a.body, `"code":"AUTH_004"`) {
		s.t.Errorf("%s refused with %q, want AUTH_004", ip, a.body)
	}
	return a
}

func (s *stack) awaitAllowed(ip string) {
	s.t.Helper()
	eventually(s.t, 15*time.Second, ip+" to be let through", func() bool { return s.request(ip, "GET", "/health", "").status == http.StatusOK })
}

// metric reads one sample from the daemon's /metrics.
func (s *stack) metric(name string) float64 { return metricAt(s.daemonAt, name) }

// metricAt reads one sample from a daemon's /metrics at addr; -1 when it
// does not answer.
func metricAt(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
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

func (s *stack) awaitEvents(n float64) {
	s.t.Helper()
	eventually(s.t, 15*time.Second, fmt.Sprintf("the daemon to process %v events", n), func() bool {
		return s.metric("authguard_events_processed_total") >= n
	})
}

// expectCleanSlate checks the runbook's clean slate for ip after an
// unblock (how is named in the messages): it is let through, four failed
// logins are all answered 401 without a block, and the fifth blocks it again
// with login_fail at 5.
func (s *stack) expectCleanSlate(ip, how string) {
	s.t.Helper()
	s.awaitAllowed(ip)
	before := s.metric("authguard_events_processed_total")
	for i := range 4 {
		if a := s.login(ip, "guess"); a.status != http.StatusUnauthorized {
			s.t.Fatalf("fresh attempt %d after %s: %d", i+1, how, a.status)
		}
	}
	s.awaitEvents(before + 4)
	if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusOK {
		s.t.Fatalf("blocked again within four fresh attempts after %s: %d", how, a.status)
	}
	s.login(ip, "guess")
	s.awaitBlocked(ip)
	if v, _ := s.rdb.Get(context.Background(), s.keyPrefix+"login_fail:"+ip).Result(); v != "5" {
		s.t.Errorf("login_fail = %q after %s and five failures, want 5", v, how)
	}
}

func (s *stack) exists(key string) bool {
	n, err := s.rdb.Exists(context.Background(), key).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	return n == 1
}

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/detector/loki/lokitest"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/gateway"
	"github.com/authguard/authguard/responder/redisblock"
)

type demoCmd struct {
	RedisServer string `help:"The redis-server binary; the demo starts its own instance on a free port." default:"redis-server"`
	Attacker    string `help:"Address the scripted attack comes from." default:"203.0.113.7"`
}

// demoPassword is the demo login app's one valid password (user alice).
const demoPassword = "correct horse battery staple"

// Run runs the whole loop on this machine: a private redis-server, the fake
// Loki, a demo login app, the gateway and the daemon with the embedded
// default rules, then a scripted attack, narrated on stdout.
func (c *demoCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := e.stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	rdb, stopRedis, err := startDemoRedis(ctx, c.RedisServer)
	if err != nil {
		return err
	}
	defer stopRedis()
	redisAddr := rdb.Options().Addr

	lk := lokitest.New(lokitest.Options{})
	defer lk.Close()

	app := &http.Server{Handler: http.HandlerFunc(demoLoginApp)}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go app.Serve(appLn)
	defer app.Close()

	quiet := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	store := redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{})
	list := gateway.NewBlocklist()
	go (&gateway.Syncer{Store: store.Reader, List: list, Interval: time.Second, Log: quiet}).Run(ctx)
	pusher, err := gateway.NewPusher(gateway.PusherOptions{URL: lk.URL, FlushEvery: 100 * time.Millisecond, Log: quiet})
	if err != nil {
		return err
	}
	go pusher.Run(ctx)
	firstAudit := &firstLine{}
	upstream, _ := url.Parse("http://" + appLn.Addr().String())
	gw := gateway.New(gateway.Options{Upstream: upstream, Blocklist: list, Audit: gateway.MultiSink{pusher, firstAudit}, Log: quiet,
		ClientIP: gateway.ClientIPResolver{Trusted: mustPrefixes("127.0.0.0/8")}})
	gwLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gwSrv := &http.Server{Handler: gw}
	go gwSrv.Serve(gwLn)
	defer gwSrv.Close()
	gwURL := "http://" + gwLn.Addr().String()

	pages := &pageWriter{ready: make(chan struct{})}
	daemonCmd := runCmd{LokiURL: lk.URL, LokiQuery: loki.DefaultQuery, Flags: redisflag.Flags{RedisURL: "redis://" + redisAddr + "/0"},
		Listen: "127.0.0.1:0", MaxLineBytes: loki.DefaultMaxLineBytes, LokiSettle: 200 * time.Millisecond}
	d, err := daemonCmd.build(ctx, quiet, pages)
	if err != nil {
		return err
	}
	daemonDone := make(chan error, 1)
	go func() { daemonDone <- d.run(ctx) }()
	if err := await(ctx, 10*time.Second, "authguard to tail Loki", func() bool { return d.tail.Connected() }); err != nil {
		return err
	}

	say("authguard demo: runbook SEC-010 on real parts")
	say("  redis-server   %s (started for this demo, removed after)", redisAddr)
	say("  loki           %s (lokitest, the protocol-faithful fake)", lk.URL)
	say("  login app      %s (alice / %q)", upstream, demoPassword)
	say("  gateway        %s -> login app, audit lines pushed to Loki", gwURL)
	say("  authguard      tailing %s", loki.DefaultQuery)
	say("  rules          embedded default: 5 failed logins from one IP in 24h -> block 300 s")
	say("")
	say("1. %s guesses alice's password through the gateway", c.Attacker)
	for i, guess := range []string{"123456", "password", "qwerty", "letmein", "alice2026"} {
		a, err := demoLogin(ctx, gwURL, c.Attacker, guess)
		if err != nil {
			return err
		}
		say("   POST /auth/login  password=%-10s -> %d", guess, a.status)
		if i == 0 {
			say("   audit line: %s", firstAudit.get())
		}
	}
	say("")
	say("2. authguard counts 5 failures in the window and blocks %s in Redis", c.Attacker)
	blockKey, failKey := "ip_block:"+c.Attacker, "login_fail:"+c.Attacker
	if err := await(ctx, 15*time.Second, "the block in Redis", func() bool { return rdb.Exists(ctx, blockKey).Val() == 1 }); err != nil {
		return err
	}
	ttl := rdb.TTL(ctx, blockKey).Val()
	say("   redis-cli GET %s  -> %s   TTL %d s (expires %s)", blockKey, rdb.Get(ctx, blockKey).Val(), int(ttl.Seconds()), time.Now().Add(ttl).UTC().Format("2006-01-02 15:04:05 UTC"))
	say("   redis-cli GET %s -> %s", failKey, rdb.Get(ctx, failKey).Val())
	say("")
	say("3. the incident page (no Slack token configured, so it is rendered here)")
	select {
	case <-pages.ready:
	case <-time.After(15 * time.Second):
		return errors.New("demo: no incident page within 15 s")
	}
	say("%s", indent(pages.String(), "   "))
	say("4. the gateway refuses %s everywhere; others are unaffected", c.Attacker)
	if err := await(ctx, 5*time.Second, "the gateway to learn of the block", func() bool {
		a, err := demoRequest(ctx, gwURL, c.Attacker, "GET", "/health", "")
		return err == nil && a.status == http.StatusForbidden
	}); err != nil {
		return err
	}
	a, err := demoLogin(ctx, gwURL, c.Attacker, demoPassword)
	if err != nil {
		return err
	}
	say("   POST /auth/login from %s (right password) -> %d %s   Retry-After: %s", c.Attacker, a.status, strings.TrimSpace(a.body), a.retryAfter)
	a, _ = demoLogin(ctx, gwURL, "198.51.100.23", demoPassword)
	say("   POST /auth/login from 198.51.100.23 (right password) -> %d", a.status)
	say("")
	incident := rdb.HGet(ctx, "authguard:block:"+c.Attacker, "incident").Val()
	say("5. an operator unblocks: authguard blocks remove %s --reason ...", c.Attacker)
	say("   (deletes %s and %s, as the runbook's redis-cli DEL does, and records who and why)", blockKey, failKey)
	attacker, _ := netip.ParseAddr(c.Attacker)
	if _, err := store.Unblock(ctx, attacker, "demo-operator", "customer confirmed a forgotten password", time.Now()); err != nil {
		return err
	}
	if err := await(ctx, 5*time.Second, "the gateway to drop the block", func() bool {
		a, err := demoRequest(ctx, gwURL, c.Attacker, "GET", "/health", "")
		return err == nil && a.status == http.StatusOK
	}); err != nil {
		return err
	}
	a, _ = demoLogin(ctx, gwURL, c.Attacker, demoPassword)
	say("   POST /auth/login from %s (right password) -> %d", c.Attacker, a.status)
	say("")
	say("6. the incident report: authguard incidents show %s", incident)
	recs, err := store.Incident(ctx, incident)
	if err != nil {
		return err
	}
	var report strings.Builder
	writeReport(&report, incident, recs, time.Now())
	say("%s", indent(report.String(), "   "))
	say("")
	say("Done. In production: authguard run --loki-url ... --redis-url ... --slack-token-file ...; see README.md.")
	cancel()
	if err := <-daemonDone; err != nil {
		return err
	}
	return nil
}

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// demoLoginApp is a login service: alice with demoPassword gets 200, every
// other attempt 401.
func demoLoginApp(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/auth/login" {
		io.WriteString(w, `{"status":"ok"}`)
		return
	}
	var body struct{ Username, Password string }
	json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body)
	w.Header().Set("Content-Type", "application/json")
	if body.Username != "alice" || body.Password != demoPassword {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid credentials"}`)
		return
	}
	io.WriteString(w, `{"token":"demo"}`)
}

type demoAnswer struct {
	status     int
	body       string
	retryAfter string
}

func demoRequest(ctx context.Context, base, ip, method, path, body string) (demoAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		return demoAnswer{}, err
	}
	// The gateway trusts loopback as a proxy, so the demo can speak for any
	// client address the way a load balancer would.
	req.Header.Set("X-Forwarded-For", ip)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return demoAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return demoAnswer{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}, nil
}

func demoLogin(ctx context.Context, base, ip, password string) (demoAnswer, error) {
	body, _ := json.Marshal(map[string]string{"username": "alice", "password": password})
	return demoRequest(ctx, base, ip, http.MethodPost, "/auth/login", string(body))
}

// startDemoRedis starts a private redis-server on a free loopback port.
func startDemoRedis(ctx context.Context, bin string) (*redis.Client, func(), error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("demo needs redis-server (apt-get install -y redis-server; make demo does this): %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir, err := os.MkdirTemp("", "authguard-demo-redis-")
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(path, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("start redis-server: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	stop := func() {
		rdb.Close()
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
	}
	if err := await(ctx, 10*time.Second, "redis-server to start", func() bool { return rdb.Ping(ctx).Err() == nil }); err != nil {
		stop()
		return nil, nil, fmt.Errorf("%w\n%s", err, logs.String())
	}
	return rdb, stop, nil
}

// await polls cond until it holds, ctx ends or the time is up.
func await(ctx context.Context, within time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: timed out waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// pageWriter collects pages written by the terminal notifier.
type pageWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	ready chan struct{}
}

func (p *pageWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.buf.Write(b)
	p.once.Do(func() { close(p.ready) })
	return n, err
}

func (p *pageWriter) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// firstLine keeps the first audit line the gateway writes.
type firstLine struct {
	mu   sync.Mutex
	line string
}

func (f *firstLine) Audit(_ time.Time, line []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.line == "" {
		f.line = string(line)
	}
}

func (f *firstLine) get() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.line
}

func indent(s, pad string) string {
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

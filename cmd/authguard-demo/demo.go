package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/detector/loki/lokitest"
)

type cli struct {
	Bin         string `help:"Folder holding the authguard and authguard-gateway binaries (default: this binary's own)." placeholder:"DIR"`
	RedisServer string `help:"The redis-server binary; the demo starts its own instance on a free port." default:"redis-server"`
	Attacker    string `help:"Address the scripted attack comes from." default:"203.0.113.7"`
}

// demoPassword is the demo login app's one valid password (user alice).
const demoPassword = "correct horse battery staple"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	exited := false
	parser, err := kong.New(&c, kong.Name("authguard-demo"),
		kong.Description("Runs authguard's whole loop on this machine against a scripted attack."),
		kong.Writers(stdout, stderr), kong.Exit(func(int) { exited = true }))
	if err != nil {
		return err
	}
	if _, err := parser.Parse(args); err != nil || exited {
		return err
	}
	if c.Bin == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		c.Bin = filepath.Dir(self)
	}
	return c.demo(ctx, stdout)
}

// demo starts the parts, runs the attack and narrates it on out.
func (c *cli) demo(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &demoRun{cli: c, say: func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) },
		authguard: filepath.Join(c.Bin, "authguard")}
	stop, err := r.start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	for _, step := range []func(context.Context) error{r.introduce, r.attack, r.block, r.page, r.refuse, r.unblock, r.report} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	r.say("Done. In production: authguard run --loki-url ... --redis-url ... --slack-token-file ...; see README.md.")
	return nil
}

// demoRun is one run of the demo: its parts, and what the steps share.
type demoRun struct {
	*cli
	say                func(format string, args ...any)
	authguard          string // the binary, for the operator's commands
	rdb                *redis.Client
	redisURL, lokiURL  string
	appURL, gatewayURL string
	gateway, daemon    *process
	incident           string
}

// start starts Redis, the fake Loki, the login app, the gateway and the
// daemon, and waits until both binaries are ready; stop ends them all.
func (r *demoRun) start(ctx context.Context) (stop func(), err error) {
	gatewayBin := filepath.Join(r.Bin, "authguard-gateway")
	for _, b := range []string{r.authguard, gatewayBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%w (make demo builds it; or give --bin)", err)
		}
	}
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	rdb, stopRedis, err := startRedis(ctx, r.RedisServer)
	if err != nil {
		return nil, err
	}
	stops = append(stops, stopRedis)
	r.rdb, r.redisURL = rdb, "redis://"+rdb.Options().Addr+"/0"
	lk := lokitest.New(lokitest.Options{})
	stops = append(stops, lk.Close)
	r.lokiURL = lk.URL
	appURL, stopApp, err := startLoginApp()
	if err != nil {
		return nil, err
	}
	stops = append(stops, stopApp)
	r.appURL = appURL

	gwAddr, gwAdmin, daemonAdmin := freeAddr(), freeAddr(), freeAddr()
	r.gatewayURL = "http://" + gwAddr
	if r.gateway, err = start(ctx, gatewayBin, "--listen", gwAddr, "--admin-listen", gwAdmin, "--upstream", appURL,
		"--redis-url", r.redisURL, "--trusted-proxies", "127.0.0.0/8", "--loki-push-url", lk.URL, "--log-level", "error"); err != nil {
		return nil, err
	}
	stops = append(stops, r.gateway.stop)
	if r.daemon, err = start(ctx, r.authguard, "run", "--loki-url", lk.URL, "--redis-url", r.redisURL, "--listen", daemonAdmin,
		"--loki-settle", "200ms", "--log-level", "error"); err != nil {
		return nil, err
	}
	stops = append(stops, r.daemon.stop)
	for _, p := range []struct{ what, url string }{{"the gateway to be ready", "http://" + gwAdmin + "/readyz"}, {"authguard to tail Loki", "http://" + daemonAdmin + "/readyz"}} {
		if err := await(ctx, 20*time.Second, p.what, func() bool { return statusOf(p.url) == http.StatusOK }, r.gateway, r.daemon); err != nil {
			return nil, err
		}
	}
	return stop, nil
}

func (r *demoRun) introduce(context.Context) error {
	r.say("authguard demo: runbook SEC-010 on real parts")
	r.say("  redis-server   %s (started for this demo, removed after)", r.rdb.Options().Addr)
	r.say("  loki           %s (lokitest, the protocol-faithful fake)", r.lokiURL)
	r.say("  login app      %s (alice / %q)", r.appURL, demoPassword)
	r.say("  gateway        %s -> login app, audit lines pushed to Loki (bin/authguard-gateway)", r.gatewayURL)
	r.say("  authguard      tailing Loki with the embedded default rules (bin/authguard run)")
	r.say("  rules          5 failed logins from one IP in 24h -> block 300 s")
	r.say("")
	return nil
}

// attack guesses alice's password five times through the gateway.
func (r *demoRun) attack(ctx context.Context) error {
	r.say("1. %s guesses alice's password through the gateway", r.Attacker)
	for i, guess := range []string{"123456", "password", "qwerty", "letmein", "alice2026"} {
		a, err := login(ctx, r.gatewayURL, r.Attacker, guess)
		if err != nil {
			return err
		}
		r.say("   POST /auth/login  password=%-10s -> %d", guess, a.status)
		if i == 0 {
			if err := await(ctx, 5*time.Second, "the gateway's audit line", func() bool { return r.gateway.out.firstLine() != "" }, r.gateway); err != nil {
				return err
			}
			r.say("   audit line: %s", r.gateway.out.firstLine())
		}
	}
	r.say("")
	return nil
}

// block shows the runbook's keys authguard wrote.
func (r *demoRun) block(ctx context.Context) error {
	r.say("2. authguard counts 5 failures in the window and blocks %s in Redis", r.Attacker)
	blockKey, failKey := "ip_block:"+r.Attacker, "login_fail:"+r.Attacker
	if err := await(ctx, 15*time.Second, "the block in Redis", func() bool { return r.rdb.Exists(ctx, blockKey).Val() == 1 }, r.daemon); err != nil {
		return err
	}
	ttl := r.rdb.TTL(ctx, blockKey).Val()
	r.say("   redis-cli GET %s  -> %s   TTL %d s (expires %s)", blockKey, r.rdb.Get(ctx, blockKey).Val(), int(ttl.Seconds()), time.Now().Add(ttl).UTC().Format(time.DateTime+" UTC"))
	r.say("   redis-cli GET %s -> %s", failKey, r.rdb.Get(ctx, failKey).Val())
	r.say("")
	r.incident = r.rdb.HGet(ctx, "authguard:block:"+r.Attacker, "incident").Val()
	return nil
}

// page shows the incident page the daemon rendered.
func (r *demoRun) page(ctx context.Context) error {
	r.say("3. the incident page (no Slack token configured, so authguard renders it on its stdout)")
	if err := await(ctx, 15*time.Second, "the incident page", func() bool { return strings.Contains(r.daemon.out.String(), r.Attacker) }, r.daemon); err != nil {
		return err
	}
	r.say("%s", indent(r.daemon.out.String(), "   "))
	return nil
}

// refuse shows the attacker refused and another client let through.
func (r *demoRun) refuse(ctx context.Context) error {
	r.say("4. the gateway refuses %s everywhere; others are unaffected", r.Attacker)
	if err := await(ctx, 5*time.Second, "the gateway to learn of the block", func() bool {
		a, err := request(ctx, r.gatewayURL, r.Attacker, "GET", "/health", "")
		return err == nil && a.status == http.StatusForbidden
	}, r.gateway); err != nil {
		return err
	}
	a, err := login(ctx, r.gatewayURL, r.Attacker, demoPassword)
	if err != nil {
		return err
	}
	r.say("   POST /auth/login from %s (right password) -> %d %s   Retry-After: %s", r.Attacker, a.status, strings.TrimSpace(a.body), a.retryAfter)
	a, _ = login(ctx, r.gatewayURL, "198.51.100.23", demoPassword)
	r.say("   POST /auth/login from 198.51.100.23 (right password) -> %d", a.status)
	r.say("")
	return nil
}

// unblock runs the operator's command and shows the attacker let in.
func (r *demoRun) unblock(ctx context.Context) error {
	r.say("5. an operator unblocks: authguard blocks remove %s --reason ...", r.Attacker)
	r.say("   (deletes ip_block:%s and login_fail:%s, as the runbook's redis-cli DEL does, and records who and why)", r.Attacker, r.Attacker)
	if _, err := command(ctx, r.authguard, "blocks", "remove", r.Attacker, "--redis-url", r.redisURL, "--operator", "demo-operator", "--reason", "customer confirmed a forgotten password"); err != nil {
		return err
	}
	if err := await(ctx, 5*time.Second, "the gateway to drop the block", func() bool {
		a, err := request(ctx, r.gatewayURL, r.Attacker, "GET", "/health", "")
		return err == nil && a.status == http.StatusOK
	}, r.gateway); err != nil {
		return err
	}
	a, _ := login(ctx, r.gatewayURL, r.Attacker, demoPassword)
	r.say("   POST /auth/login from %s (right password) -> %d", r.Attacker, a.status)
	r.say("")
	return nil
}

// report prints the incident report from the evidence records.
func (r *demoRun) report(ctx context.Context) error {
	r.say("6. the incident report: authguard incidents show %s", r.incident)
	report, err := command(ctx, r.authguard, "incidents", "show", r.incident, "--redis-url", r.redisURL)
	if err != nil {
		return err
	}
	r.say("%s", indent(report, "   "))
	r.say("")
	return nil
}

// process is a started binary with its stdout kept.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *output
	logs   *output // stderr
	exited chan struct{}
}

func start(ctx context.Context, bin string, args ...string) (*process, error) {
	p := &process{name: filepath.Base(bin), cmd: exec.CommandContext(ctx, bin, args...), out: &output{}, logs: &output{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.logs
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

// stop ends the process as Kubernetes would (SIGTERM) and waits for it.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// command runs an operator command to its end and returns its stdout.
func command(ctx context.Context, bin string, args ...string) (string, error) {
	var out, errs bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args[:2], " "), err, errs.String())
	}
	return out.String(), nil
}

// output collects what a process writes.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(b)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// firstLine is the first whole line written ("" before one is).
func (o *output) firstLine() string {
	line, err := bufio.NewReader(strings.NewReader(o.String())).ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSpace(line)
}

// await polls cond until it holds, ctx ends or the time is up; a watched
// process that exits meanwhile ends the wait with its log.
func await(ctx context.Context, within time.Duration, what string, cond func() bool, watch ...*process) error {
	deadline := time.Now().Add(within)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		for _, p := range watch {
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited while the demo waited for %s:\n%s", p.name, what, p.logs.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// startRedis starts a private redis-server on a free loopback port.
func startRedis(ctx context.Context, bin string) (*redis.Client, func(), error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("the demo needs redis-server (apt-get install -y redis-server; make demo does this): %w", err)
	}
	addr := freeAddr()
	_, port, _ := net.SplitHostPort(addr)
	dir, err := os.MkdirTemp("", "authguard-demo-redis-")
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(path, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	var logs output
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

// startLoginApp serves the demo login service: alice with demoPassword
// gets 200, every other attempt 401.
func startLoginApp() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

type answer struct {
	status     int
	body       string
	retryAfter string
}

func request(ctx context.Context, base, ip, method, path, body string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	// The gateway trusts loopback as a proxy, so the demo can speak for any
	// client address the way a load balancer would.
	req.Header.Set("X-Forwarded-For", ip)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return answer{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}, nil
}

func login(ctx context.Context, base, ip, password string) (answer, error) {
	body, _ := json.Marshal(map[string]string{"username": "alice", "password": password})
	return request(ctx, base, ip, http.MethodPost, "/auth/login", string(body))
}

func statusOf(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// freeAddr is a loopback address nothing listens on at the moment.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

func indent(s, pad string) string {
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

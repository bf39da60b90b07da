package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authguard/authguard/cmd/internal/buildinfo"
	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/exitcode"
	"github.com/authguard/authguard/cmd/internal/gomem"
	"github.com/authguard/authguard/cmd/internal/logflag"
	"github.com/authguard/authguard/cmd/internal/lokiflag"
	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/cmd/internal/secret"
	"github.com/authguard/authguard/cmd/internal/serve"
	"github.com/authguard/authguard/responder/auditsig"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/cidr"
	"github.com/authguard/authguard/responder/gateway"
)

type cli struct {
	Config  kong.ConfigFlag  `help:"YAML settings file; its keys are the flag names (nested keys join with -)." placeholder:"FILE"`
	Version kong.VersionFlag `short:"v" env:"-" help:"Print the version and exit (also: authguard-gateway version)."`

	Listen                   string `help:"Address the proxy listens on." default:":8080"`
	AdminListen              string `help:"Address for /metrics, /healthz and /readyz (kept off the proxied port)." default:":9091"`
	Mode                     string `help:"proxy: reverse proxy to --upstream; forward-auth: answer nginx auth_request, Traefik ForwardAuth and Envoy ext_authz checks with 200 or 403." default:"proxy" enum:"proxy,forward-auth"`
	Upstream                 string `help:"URL of the service to protect (proxy mode)." placeholder:"URL"`
	TLSCertFile              string `name:"tls-cert-file" help:"Serve HTTPS (and HTTP/2) with this certificate." placeholder:"FILE"`
	TLSKeyFile               string `name:"tls-key-file" help:"Key of --tls-cert-file." placeholder:"FILE"`
	H2C                      bool   `name:"h2c" env:"AUTHGUARD_GATEWAY_H2C" help:"Also accept HTTP/2 without TLS (h2c), e.g. behind a proxy that speaks it."`
	redisflag.Flags          `embed:""`
	serve.Limits             `embed:""`
	HTTPBodyProgressTimeout  time.Duration `help:"On the proxy port, the longest a request body may go without sending a byte: a slow-body client is cut off, an upload that keeps moving may take as long as it needs (0: no bound)." default:"30s"`
	TrustedProxies           []string      `help:"CIDRs of proxies whose client IP header is believed." placeholder:"CIDR,..."`
	ClientIPHeader           string        `name:"client-ip-header" help:"Header a trusted proxy names the client in: x-forwarded-for, forwarded (RFC 7239) or x-real-ip." default:"x-forwarded-for" enum:"x-forwarded-for,forwarded,x-real-ip"`
	CheckRedisOnMiss         bool          `help:"Look a client up in Redis when it is not in the in-memory blocklist, so blocks set by hand apply at once (one Redis round trip per unblocked request)."`
	FailMode                 string        `help:"Until blocks were first read from Redis: open (let requests through) or closed (503)." default:"open" enum:"open,closed"`
	ReconcileInterval        time.Duration `help:"How often the blocklist is read from Redis in full, which picks up blocks set or deleted by hand with redis-cli (what authguard writes is followed as it happens, on the changes stream)." default:"30s"`
	LoginRoutes              []string      `help:"Routes whose 401 and 2xx answers are audited, as \"METHOD /path\" (repeatable; also --login-path)." default:"POST /auth/login" aliases:"login-path"`
	LoginRoutesCaseSensitive bool          `help:"Compare login paths with their case (by default /AUTH/LOGIN is /auth/login; paths are always compared decoded, without dot segments, path parameters or a trailing slash)."`
	UsernameField            string        `help:"Field of the login body (JSON or form) holding the username." default:"username"`
	AccountProtection        bool          `help:"Refuse logins to accounts the daemon protects (account_protect:<user>) except from addresses that logged into them before, and record those addresses; one Redis round trip per login attempt (proxy mode)." default:"true" negatable:""`
	AccountGoodFor           time.Duration `help:"How long an address that logged into an account stays one that protection lets through." default:"30d"`
	AuditStdout              bool          `help:"Write audit lines to stdout." default:"true" negatable:""`
	LokiPushURL              string        `help:"Push audit lines to this Loki (or authguard push receiver) base URL." placeholder:"URL"`
	AuditSigningKeyFile      string        `help:"Sign every audit line (its sig field) with the key in this file (16 bytes or more), so the daemon's --audit-verify-key-file counts only the gateway's lines." placeholder:"FILE"`
	lokiflag.Loki            `embed:""`
	LokiLabels               map[string]string `help:"Extra stream labels for pushed audit lines (service=audit is always set)." placeholder:"NAME=VALUE;..."`
	CheckConfig              cliconfig.Check   `help:"Validate the settings, print the result and where each setting came from, and exit; nothing is contacted, but with --check-config=online Redis, the upstream and the push URL are reached too, and one that does not answer exits 3."`
	logflag.Log              `embed:""`

	sources *cliconfig.Sources // which settings the --config file gave
	kctx    *kong.Context      // the parse, for --check-config
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && args[0] == "version" {
		// The gateway takes no commands but this one, as authguard has it.
		fmt.Fprintln(stdout, buildinfo.String("authguard-gateway"))
		return nil
	}
	var c cli
	exited := false
	c.sources = &cliconfig.Sources{}
	parser, err := newParser(&c, stdout, kong.Writers(stdout, stderr), kong.Exit(func(int) { exited = true }))
	if err != nil {
		return err
	}
	c.kctx, err = parser.Parse(args)
	if exited {
		return nil // --help or --version was shown
	}
	if err != nil {
		return exitcode.UsageError(cliconfig.NameEnv(err))
	}
	return c.serve(ctx, stdout, stderr)
}

// newParser is the gateway's command line over c.
func newParser(c *cli, stdout io.Writer, opts ...kong.Option) (*kong.Kong, error) {
	return kong.New(c, append([]kong.Option{
		kong.Name("authguard-gateway"),
		kong.Description("Enforces authguard's blocks in front of a login service."),
		kong.Configuration(cliconfig.Loader("", c.sources)),
		cliconfig.Durations,
		kong.DefaultEnvars("AUTHGUARD_GATEWAY"),
		kong.Vars{"version": buildinfo.String("authguard-gateway")},
		kong.Writers(stdout, stdout),
	}, opts...)...)
}

// settings are the flags checked and turned into what the gateway runs
// with; nothing is contacted.
type settings struct {
	upstream          *url.URL
	proxyTLS, pushTLS *tls.Config // nil: plain HTTP
	clientIP          gateway.ClientIPResolver
	routes            []gateway.Route
	signingKey        *auditsig.Key
}

func (c *cli) settings() (*settings, error) {
	st := &settings{}
	switch {
	case c.Mode == "proxy":
		u, err := cliconfig.URL("--upstream", c.Upstream, "http://app:3000 (proxy mode needs one)", "http", "https")
		if err != nil {
			return nil, err
		}
		st.upstream = u
	case c.Upstream != "":
		return nil, errors.New("--upstream is for proxy mode; forward-auth mode answers checks itself")
	}
	var err error
	// The certificate is read again when it is renewed on disk.
	if st.proxyTLS, err = serve.TLS("--tls", c.TLSCertFile, c.TLSKeyFile, ""); err != nil {
		return nil, err
	}
	trusted, err := cidr.ParseList(c.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	st.clientIP = gateway.ClientIPResolver{Trusted: trusted, Header: c.ClientIPHeader}
	if st.routes, err = parseRoutes(c.LoginRoutes); err != nil {
		return nil, err
	}
	if c.AuditSigningKeyFile != "" {
		keys, err := secret.AuditKeys([]string{c.AuditSigningKeyFile})
		if err != nil {
			return nil, fmt.Errorf("--audit-signing-key-file: %w", err)
		}
		st.signingKey = &keys[0]
	}
	if c.LokiPushURL != "" {
		if _, err := cliconfig.URL("--loki-push-url", c.LokiPushURL, "http://loki:3100", "http", "https"); err != nil {
			return nil, err
		}
		if err := c.Loki.Check(); err != nil {
			return nil, err
		}
		if st.pushTLS, err = c.Loki.TLS(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (c *cli) serve(ctx context.Context, stdout, stderr io.Writer) error {
	log, err := c.Logger(stderr)
	if err != nil {
		return err
	}
	st, err := c.settings()
	if err != nil {
		return err
	}
	rdb, err := c.Client()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if c.CheckConfig != "" {
		return c.check(ctx, stdout, rdb)
	}
	gomem.Set(log)
	store := blockset.NewReader(rdb, c.Keys())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), gomem.Gauge(prometheus.GaugeOpts{Name: "authguard_gateway_memory_limit_bytes"}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sinks, pusherDone, err := c.audit(ctx, stdout, st.pushTLS, log, reg)
	if err != nil {
		return err
	}
	list := gateway.NewBlocklist()
	redisOK := c.sync(ctx, store, list, log, reg)
	opts := gateway.Options{Upstream: st.upstream, ClientIP: st.clientIP, FailClosed: c.FailMode == "closed",
		Blocklist: list, LoginRoutes: st.routes, CaseSensitiveRoutes: c.LoginRoutesCaseSensitive, UsernameField: c.UsernameField,
		Audit: sinks, SigningKey: st.signingKey, Log: log, Registry: reg}
	if c.CheckRedisOnMiss {
		opts.MissCheck = store
	}
	if c.AccountProtection {
		opts.Accounts = blockset.NewAccounts(rdb, c.Keys(), c.AccountGoodFor)
	}
	err = c.listen(ctx, gateway.New(opts), admin(reg, list, redisOK), st.proxyTLS, log)
	cancel()
	<-pusherDone
	return err
}

// audit returns where audit lines go: stdout, and the pusher (running
// until ctx ends; done closes when it has flushed) with --loki-push-url.
func (c *cli) audit(ctx context.Context, stdout io.Writer, pushTLS *tls.Config, log *slog.Logger, reg prometheus.Registerer) (gateway.MultiSink, <-chan struct{}, error) {
	var sinks gateway.MultiSink
	if c.AuditStdout {
		sinks = append(sinks, &gateway.WriterSink{W: stdout})
	}
	done := make(chan struct{})
	if c.LokiPushURL == "" {
		close(done)
		return sinks, done, nil
	}
	p, err := gateway.NewPusher(gateway.PusherOptions{URL: c.LokiPushURL, Header: c.Loki.Auth().Apply, TLS: pushTLS, Labels: c.LokiLabels, Log: log, Registry: reg})
	if err != nil {
		return nil, nil, err
	}
	go func() { p.Run(ctx); close(done) }()
	return append(sinks, p), done, nil
}

// sync keeps list in step with Redis until ctx ends; the flag it returns
// says whether the last reconcile reached Redis.
func (c *cli) sync(ctx context.Context, store *blockset.Reader, list *gateway.Blocklist, log *slog.Logger, reg prometheus.Registerer) *atomic.Bool {
	redisUp := prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_gateway_redis_up", Help: "1 when the last reconcile with Redis succeeded."})
	lastSync := prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_gateway_last_reconcile_timestamp_seconds", Help: "When the blocklist was last read from Redis in full."})
	enforce := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authguard_gateway_block_to_enforce_seconds",
		Help:    "From a block written to Redis (the writer's clock) to this gateway enforcing it (its own clock), by pub/sub or the changes stream; skew between the hosts' clocks shifts it.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	reg.MustRegister(redisUp, lastSync, enforce)
	var redisOK atomic.Bool
	syncer := &gateway.Syncer{Store: store, List: list, Interval: c.ReconcileInterval, Log: log, OnReconcile: func(err error) {
		redisOK.Store(err == nil)
		if err == nil {
			redisUp.Set(1)
			lastSync.SetToCurrentTime()
		} else {
			redisUp.Set(0)
		}
	}, Enforced: func(at time.Time) { enforce.Observe(max(time.Since(at).Seconds(), 0)) }}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_gateway_redis_state_lost", Help: "1 while Redis has lost its data (the daemon's epoch key gone) and the blocks already known are enforced until the daemon writes them again."},
		func() float64 {
			if syncer.StateLost() {
				return 1
			}
			return 0
		}))
	go syncer.Run(ctx)
	return &redisOK
}

// admin serves /metrics, /healthz and /readyz: ready once the blocks were
// read from Redis, and still ready (enforcing what it knows) through a
// Redis outage after that.
func admin(reg *prometheus.Registry, list *gateway.Blocklist, redisOK *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case list.Loaded() && redisOK.Load():
			fmt.Fprintln(w, "ready")
		case list.Loaded():
			fmt.Fprintln(w, "ready: redis unreachable, enforcing the blocks already known")
		default:
			http.Error(w, "not ready: blocks not yet read from redis", http.StatusServiceUnavailable)
		}
	})
	return mux
}

// listen serves the proxy (or check) port and the admin port until ctx
// ends or a server fails, then shuts both down gracefully.
func (c *cli) listen(ctx context.Context, gw http.Handler, adminMux http.Handler, proxyTLS *tls.Config, log *slog.Logger) error {
	proxyLn, err := c.Limits.Listen(c.Listen)
	if err != nil {
		return err
	}
	adminLn, err := c.Limits.Listen(c.AdminListen)
	if err != nil {
		proxyLn.Close()
		return err
	}
	proxied := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve.ProgressBody(w, r, c.HTTPBodyProgressTimeout)
		gw.ServeHTTP(w, r)
	})
	proxySrv := c.Limits.Server(proxied, true, log)
	proxySrv.TLSConfig = proxyTLS
	proxySrv.Protocols = new(http.Protocols)
	proxySrv.Protocols.SetHTTP1(true)
	proxySrv.Protocols.SetHTTP2(proxyTLS != nil)
	proxySrv.Protocols.SetUnencryptedHTTP2(c.H2C)
	adminSrv := c.Limits.Server(adminMux, false, log)
	errc := make(chan error, 2)
	go func() {
		if proxyTLS != nil {
			errc <- proxySrv.ServeTLS(proxyLn, "", "")
			return
		}
		errc <- proxySrv.Serve(proxyLn)
	}()
	go func() { errc <- adminSrv.Serve(adminLn) }()
	log.Info("authguard-gateway running", "version", buildinfo.String("authguard-gateway"), "mode", c.Mode, "listen", proxyLn.Addr().String(), "admin", adminLn.Addr().String(), "upstream", c.Upstream)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shut, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	proxySrv.Shutdown(shut)
	adminSrv.Shutdown(shut)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	logflag.Stopped(ctx, log, "authguard-gateway", err)
	return err
}

func parseRoutes(ss []string) ([]gateway.Route, error) {
	var out []gateway.Route
	for _, s := range ss {
		method, path, ok := strings.Cut(strings.TrimSpace(s), " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("--login-routes %q: want \"METHOD /path\"", s)
		}
		out = append(out, gateway.Route{Method: strings.ToUpper(method), Path: strings.TrimSpace(path)})
	}
	return out, nil
}

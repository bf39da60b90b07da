package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/authguard/authguard/cmd/internal/leader"
	"github.com/authguard/authguard/cmd/internal/lokiflag"
	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/cmd/internal/secret"
	"github.com/authguard/authguard/cmd/internal/serve"
	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/auditsig"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/cidr"
	"github.com/authguard/authguard/responder/redisblock"
	"github.com/authguard/authguard/responder/slack"
	"github.com/authguard/authguard/rules"
)

type runCmd struct {
	Rules string `help:"Rules file (YAML). Empty: the embedded default rules (runbook SEC-010)." placeholder:"FILE"`

	LokiURL                  string        `help:"Loki base URL, e.g. http://loki:3100. Without it authguard only takes pushes on --push-listen." placeholder:"URL"`
	LokiQuery                string        `help:"LogQL query selecting the audit events. Loki is sent its stream selector and line filters; authguard checks | json and label filters itself (Loki's tail loses entries with them)." default:"${loki_query}"`
	LokiDelayFor             int           `help:"Seconds Loki holds lines back before tailing them (0-5)." default:"0"`
	LokiBackfillMax          time.Duration `help:"At start, re-read Loki as far back as the longest rule window, but no further than this (0: no backfill)." default:"24h"`
	LokiDedupWindow          time.Duration `help:"How far back repeats are recognised and gaps are re-read after a reconnect." default:"1m"`
	LokiSettle               time.Duration `help:"How long a new tail runs before the catch-up query behind it (Loki registers tails on its ingesters asynchronously)." default:"2s"`
	LokiSweepInterval        time.Duration `help:"How often the sweeper re-reads the recent past with query_range behind the live tail, and how often the reader polls when it reads by query_range alone." default:"1s"`
	LokiSweepDelay           time.Duration `help:"How long after its timestamp an entry is expected to be in Loki (shipper batching); sweeps read up to now minus this." default:"2s"`
	LokiTailMaxRate          int           `help:"Entries per second above which the reader stops tailing and polls query_range alone (a Loki tail carries about 2,000/s)." default:"1500"`
	lokiflag.Loki            `embed:""`
	LokiMaxLag               time.Duration `help:"/readyz fails when the reader is known complete only up to longer ago than this." default:"30s"`
	PushMaxBytes             int64         `help:"Largest push request body accepted on /loki/api/v1/push." default:"10485760"`
	PushBearerTokenFile      string        `help:"File of the bearer tokens (one a line; several while rotating) a push to /loki/api/v1/push must carry; re-read when it changes. Without it, or --push-allow-unauthenticated, every push is refused." placeholder:"FILE"`
	AuditVerifyKeyFile       []string      `help:"Count only audit lines signed (their sig field) with one of these keys, as the gateway's --audit-signing-key-file signs them; give two while rotating. Unsigned and forged lines are skipped and counted." placeholder:"FILE,..."`
	PushBasicAuthFile        string        `help:"File of \"USER:PASSWORD\" lines (several while rotating) whose basic auth the push receiver takes as well as, or instead of, bearer tokens; re-read when it changes." placeholder:"FILE"`
	PushTLSCertFile          string        `name:"push-tls-cert-file" help:"Serve the push receiver over HTTPS with this certificate (re-read when it changes)." placeholder:"FILE"`
	PushTLSKeyFile           string        `name:"push-tls-key-file" help:"Key of --push-tls-cert-file." placeholder:"FILE"`
	PushTLSClientCAFile      string        `name:"push-tls-client-ca-file" help:"Mutual TLS on the push receiver: a client must present a certificate these CAs signed, which then authenticates its pushes." placeholder:"FILE"`
	PushTenant               string        `help:"When set, a push must name this tenant in X-Scope-OrgID (as Loki's multi-tenant push does), or it is refused with 401." placeholder:"ID"`
	PushAllowUnauthenticated bool          `help:"Take pushes without a token (only where nothing else can reach --push-listen: anyone who can push can have any address blocked)."`

	redisflag.Flags `embed:""`
	serve.Limits    `embed:""`
	DryRun          bool     `help:"Decide, record and page, but write no block."`
	NeverBlock      []string `help:"CIDRs never blocked whatever the rules say (e.g. the gateways' own proxies)." placeholder:"CIDR,..."`
	EvidenceMaxLen  int64    `help:"Approximate length bound of the evidence stream in Redis." default:"100000"`

	SlackTokenFile         string            `help:"File holding the Slack bot token (bot-token mode)." placeholder:"FILE"`
	SlackChannel           string            `help:"Slack channel for incident pages (bot-token mode)." placeholder:"CHANNEL"`
	SlackWebhookURLFile    string            `help:"File holding a Slack incoming-webhook URL (fallback mode)." placeholder:"FILE"`
	SlackAPIURL            string            `name:"slack-api-url" help:"Slack API base URL (for testing)." hidden:""`
	SlackRoute             map[string]string `help:"Channel per severity (bot-token mode); others go to --slack-channel." placeholder:"P1=#incidents;P3=#security-log"`
	SlackMention           map[string]string `help:"Text put before new pages of a severity." default:"P1=<!here>" placeholder:"SEV=TEXT;..."`
	SlackCoalesce          time.Duration     `help:"How long pages wait for others; 3 or more new incidents of one rule in that time become one summary (0: no waiting)." default:"2s"`
	SlackMaskUsernames     bool              `help:"Hide usernames in the log lines shown on pages."`
	SlackRefresh           time.Duration     `help:"How often pages of open incidents are redrawn with the attempts that came since (0: never)." default:"1m"`
	SlackSigningSecretFile string            `help:"File holding the Slack app's signing secret: adds Unblock and Extend buttons, served on POST /slack/interactions at --listen." placeholder:"FILE"`
	GrafanaURL             string            `help:"Grafana base URL: pages link each incident's lines in Explore." placeholder:"URL"`
	GrafanaLokiDatasource  string            `help:"UID of the Loki data source in Grafana, for the Explore link." placeholder:"UID"`

	LeaderElect              bool          `help:"Run as one of several replicas: only the holder of a coordination.k8s.io Lease reads Loki, writes blocks and pages; the others stand by, ready, and take over with a backfill."`
	LeaderElectNamespace     string        `help:"Namespace of the Lease (default: the pod's own)." placeholder:"NAMESPACE"`
	LeaderElectLeaseName     string        `help:"Name of the Lease." default:"authguard"`
	LeaderElectIdentity      string        `help:"This replica's name in the Lease (default: POD_NAME, else the host name)." placeholder:"NAME"`
	LeaderElectLeaseDuration time.Duration `help:"How long a Lease not renewed keeps its holder: the longest a dead leader leaves the others waiting." default:"15s"`
	LeaderElectRenewDeadline time.Duration `help:"How long the leader tries to renew before it steps down (shorter than the lease duration)." default:"10s"`
	LeaderElectRetryPeriod   time.Duration `help:"How often standbys try to take the Lease." default:"2s"`
	Kubeconfig               string        `help:"kubeconfig for leader election from outside a cluster (default: the in-cluster service account)." placeholder:"FILE"`

	Listen           string `help:"Address for /metrics, /healthz and /readyz." default:":9090"`
	PushListen       string `help:"Address of the push receiver (POST /loki/api/v1/push), for gateways and log shippers; off unless set." placeholder:"ADDR"`
	SlackListen      string `help:"Address for Slack's interactions (POST /slack/interactions), the one endpoint to expose publicly; needed for the buttons of --slack-signing-secret-file." placeholder:"ADDR"`
	EnableLifecycle  bool   `help:"Serve POST /-/reload on --listen (off: rules reload on SIGHUP and when the file changes), as Prometheus's --web.enable-lifecycle."`
	MaxLineBytes     int    `help:"Longest excerpt of a line kept with an event for evidence and pages; lines are read whole for their fields up to --max-line-hard-bytes." default:"16384"`
	MaxLineHardBytes int    `help:"Longest audit line read at all; longer lines are counted as too_long and skipped, logged with their client_ip." default:"1048576"`
	UseLineTime      bool   `help:"Take event time from the line's ts field instead of the Loki entry timestamp."`
	CheckConfig      bool   `help:"Validate the settings, rules and secrets, print the result and exit (nothing is contacted)."`
	LogLevel         string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error"`
	LogFormat        string `help:"json or text." default:"json" enum:"json,text"`
}

func (c *runCmd) Run(ctx context.Context, e *env) error {
	log, err := newLogger(e.stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	if c.CheckConfig {
		return c.check(e)
	}
	d, err := c.build(ctx, log, e.stdout)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// daemon is a configured, not yet running authguard.
type daemon struct {
	log        *slog.Logger
	engine     *detector.Engine
	tail       *loki.Tail
	resp       *responder.Responder
	listener   net.Listener // admin
	pushLn     net.Listener // push receiver, nil when off
	slackLn    net.Listener // Slack's interactions, nil when off
	limits     serve.Limits
	lifecycle  bool // POST /-/reload is served
	registry   *prometheus.Registry
	store      *redisblock.Store
	neverBlock []netip.Prefix // --never-block, refused by the rules and by Slack's Extend
	processed  prometheus.Counter
	reloader   *reloader

	trackedKeys, evictions, late, future atomic.Uint64
	evictedBefore                        uint64              // evictions of engines replaced by reloads
	events                               chan detector.Event // from the tail and the push receiver
	receiver                             *loki.Receiver
	notifier                             *slack.Notifier
	signingSecret                        string
	close                                func()

	// elect is set when replicas elect a leader; leading says this one
	// runs the loop (always, without election).
	elect   *election
	leading atomic.Bool
	rules   string // the rules file, read again when a standby takes over
}

// election is how this replica takes part in leader election.
type election struct {
	client kubernetes.Interface
	cfg    leader.Config
}

// loadRules reads a rules file, or returns the embedded defaults for "".
func loadRules(path string) (*rules.Set, error) {
	if path == "" {
		set, _ := rules.Default()
		return set, nil
	}
	return rules.Load(path)
}

// settings are the parts of runCmd that are parsed and validated before
// anything is started; --check-config stops after them.
type settings struct {
	set        *rules.Set
	engine     *detector.Engine
	neverBlock []netip.Prefix
	lokiTLS    *tls.Config
	pushAuth   *pushAuth
	pushTLS    *tls.Config // nil: plain HTTP
}

func (c *runCmd) settings() (*settings, error) {
	set, err := loadRules(c.Rules)
	if err != nil {
		return nil, err
	}
	engine, err := detector.New(set.Config)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if c.LokiDelayFor < 0 || c.LokiDelayFor > 5 {
		return nil, fmt.Errorf("--loki-delay-for %d: Loki accepts 0 to 5 seconds", c.LokiDelayFor)
	}
	if c.LokiURL != "" {
		if _, err := loki.ParseQuery(c.LokiQuery); err != nil {
			return nil, err
		}
		if err := c.Loki.Auth().Check(); err != nil {
			return nil, err
		}
	}
	pushAuth, err := c.pushAuth()
	if err != nil {
		return nil, err
	}
	pushTLS, err := serve.TLS("--push-tls", c.PushTLSCertFile, c.PushTLSKeyFile, c.PushTLSClientCAFile)
	if err != nil {
		return nil, err
	}
	if _, err := secret.AuditKeys(c.AuditVerifyKeyFile); err != nil {
		return nil, fmt.Errorf("--audit-verify-key-file: %w", err)
	}
	neverBlock, err := cidr.ParseList(c.NeverBlock)
	if err != nil {
		return nil, fmt.Errorf("--never-block: %w", err)
	}
	tlsConf, err := c.Loki.TLS()
	if err != nil {
		return nil, err
	}
	return &settings{set, engine, neverBlock, tlsConf, pushAuth, pushTLS}, nil
}

func (c *runCmd) build(ctx context.Context, log *slog.Logger, stdout io.Writer) (*daemon, error) {
	st, err := c.settings()
	if err != nil {
		return nil, err
	}
	if c.Rules == "" {
		log.Info("using the embedded default rules", "file", rules.DefaultFile)
	}
	set, engine, neverBlock, tlsConf := st.set, st.engine, st.neverBlock, st.lokiTLS
	rdb, err := c.Client()
	if err != nil {
		return nil, err
	}
	store := redisblock.New(rdb, c.Keys(), redisblock.Options{EvidenceMaxLen: c.EvidenceMaxLen})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := c.Limits.Listen(c.Listen)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	d := &daemon{log: log, engine: engine, listener: ln, limits: c.Limits, lifecycle: c.EnableLifecycle, registry: reg, store: store, neverBlock: neverBlock, reloader: newReloader(c.Rules, reg), rules: c.Rules}
	if c.LeaderElect {
		client, err := leader.Client(c.Kubeconfig)
		if err != nil {
			rdb.Close()
			ln.Close()
			return nil, err
		}
		klog.SetSlogLogger(log) // client-go logs through klog
		cfg := leader.Config{Namespace: c.LeaderElectNamespace, Name: c.LeaderElectLeaseName, Identity: c.LeaderElectIdentity,
			LeaseDuration: c.LeaderElectLeaseDuration, RenewDeadline: c.LeaderElectRenewDeadline, RetryPeriod: c.LeaderElectRetryPeriod}
		if cfg.Namespace == "" {
			cfg.Namespace = leader.Namespace()
		}
		if cfg.Identity == "" {
			cfg.Identity = leader.Identity()
		}
		d.elect = &election{client, cfg}
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_leader", Help: "1 while this replica runs the loop (holds the Lease, or runs without leader election)."}, func() float64 {
		if d.leading.Load() {
			return 1
		}
		return 0
	}))
	d.reloader.loaded.Set(float64(len(set.Config.Rules)))
	// The engine belongs to the detect loop; it publishes its counters here
	// every second for scrapes to read.
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_detector_tracked_keys", Help: "Keys held in the detector's windows."}, func() float64 { return float64(d.trackedKeys.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_evictions_total", Help: "Keys evicted to keep the detector under its memory cap."}, func() float64 { return float64(d.evictions.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_late_events_total", Help: "Events dropped for arriving later than the out-of-order tolerance."}, func() float64 { return float64(d.late.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_future_events_total", Help: "Events stamped more than 10 minutes ahead of the daemon's clock, counted at the clock's time."}, func() float64 { return float64(d.future.Load()) }),
	)
	d.processed = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_events_processed_total", Help: "Events run through the detector."})
	reg.MustRegister(d.processed)
	parser := loki.NewParser(loki.DefaultFields, c.MaxLineBytes, c.MaxLineHardBytes, c.UseLineTime)
	if len(c.AuditVerifyKeyFile) > 0 {
		keys, err := secret.AuditKeys(c.AuditVerifyKeyFile)
		if err != nil {
			rdb.Close()
			ln.Close()
			return nil, err
		}
		parser.Verify(auditsig.NewVerifier(keys...))
	}
	lokiMetrics := loki.NewMetrics(reg)
	d.events = make(chan detector.Event, 1024)
	d.receiver = loki.NewReceiver(parser, d.events, c.PushMaxBytes, log, lokiMetrics, reg)
	d.receiver.Authorize = st.pushAuth.authorize
	if c.PushListen != "" && !st.pushAuth.authenticates() {
		log.Warn("the push receiver takes pushes without credentials (--push-allow-unauthenticated): whoever reaches it can have any address blocked")
	}
	if c.LokiURL != "" {
		d.tail, err = loki.NewTail(loki.Config{URL: c.LokiURL, Query: c.LokiQuery, DelayFor: c.LokiDelayFor,
			Backfill: min(set.MaxWindow, c.LokiBackfillMax), DedupWindow: c.LokiDedupWindow, Settle: c.LokiSettle,
			SweepInterval: c.LokiSweepInterval, SweepDelay: c.LokiSweepDelay, TailMaxRate: c.LokiTailMaxRate, MaxLag: c.LokiMaxLag,
			Header: c.Loki.Auth().Apply, TLS: tlsConf}, parser, log, lokiMetrics)
		if err != nil {
			rdb.Close()
			ln.Close()
			return nil, err
		}
	}
	// Pages draw each incident's attempts per minute from Loki.
	var attempts slack.Attempts
	if d.tail != nil {
		attempts = d.tail
	}
	if d.notifier, d.signingSecret, err = c.notifier(stdout, log, reg, attempts, store); err != nil {
		rdb.Close()
		ln.Close()
		return nil, err
	}
	if d.pushLn, d.slackLn, err = c.listeners(d.signingSecret != "", st.pushTLS); err != nil {
		rdb.Close()
		ln.Close()
		return nil, err
	}
	d.resp = responder.New(responder.Options{Store: store, Notifier: d.notifier, Log: log, Registry: reg,
		DryRun: c.DryRun, NeverBlock: neverBlock})
	d.close = func() {
		rdb.Close()
		for _, l := range []net.Listener{ln, d.pushLn, d.slackLn} {
			if l != nil {
				l.Close()
			}
		}
	}
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		log.Warn("redis is not reachable yet; blocks will be queued and retried", "redis", c.Redacted(), "err", err)
	}
	return d, nil
}

// listeners opens the push and Slack listeners that are asked for (the
// push one over TLS when pushTLS is set). Slack's
// buttons need theirs: it is the endpoint exposed to the internet, and
// nothing else is served there.
func (c *runCmd) listeners(buttons bool, pushTLS *tls.Config) (push, slack net.Listener, err error) {
	if buttons && c.SlackListen == "" {
		return nil, nil, errors.New("--slack-signing-secret-file needs --slack-listen: Slack's interactions are served on a listener of their own")
	}
	if c.PushListen != "" {
		if push, err = c.Limits.Listen(c.PushListen); err != nil {
			return nil, nil, err
		}
		if pushTLS != nil {
			push = tls.NewListener(push, pushTLS)
		}
	}
	if c.SlackListen != "" {
		if slack, err = c.Limits.Listen(c.SlackListen); err != nil {
			if push != nil {
				push.Close()
			}
			return nil, nil, err
		}
	}
	return push, slack, nil
}

// check validates everything build would use, without listening or
// connecting.
func (c *runCmd) check(e *env) error {
	st, err := c.settings()
	if err != nil {
		return err
	}
	rdb, err := c.Client()
	if err != nil {
		return err
	}
	rdb.Close()
	if _, _, err := c.notifier(io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil, nil); err != nil {
		return err
	}
	for flag, addr := range map[string]string{"--listen": c.Listen, "--push-listen": c.PushListen, "--slack-listen": c.SlackListen} {
		if addr == "" && flag != "--listen" {
			continue
		}
		if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
			return fmt.Errorf("%s %q: %w", flag, addr, err)
		}
	}
	if c.SlackSigningSecretFile != "" && c.SlackListen == "" {
		return errors.New("--slack-signing-secret-file needs --slack-listen: Slack's interactions are served on a listener of their own")
	}
	fmt.Fprintf(e.stdout, "configuration OK: %d rules, redis %s, loki %s\n", len(st.set.Config.Rules), c.Redacted(), orNone(c.LokiURL))
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none: push receiver only)"
	}
	return s
}

// notifier builds the pager from the Slack settings, reading its secrets
// once; it also returns the signing secret the buttons' endpoint checks
// ("" when there are no buttons).
func (c *runCmd) notifier(stdout io.Writer, log *slog.Logger, reg prometheus.Registerer, attempts slack.Attempts, messages slack.Messages) (*slack.Notifier, string, error) {
	signing, err := secret.Read(c.SlackSigningSecretFile, "AUTHGUARD_SLACK_SIGNING_SECRET")
	if err != nil {
		return nil, "", err
	}
	opts := slack.Options{Channel: c.SlackChannel, APIURL: c.SlackAPIURL, Terminal: stdout,
		Routes: c.SlackRoute, Mentions: c.SlackMention, Coalesce: c.SlackCoalesce, MaskUsernames: c.SlackMaskUsernames,
		Buttons: signing != "", Attempts: attempts, Messages: messages, Log: log, Registry: reg}
	if opts.Coalesce <= 0 {
		opts.Coalesce = -1 // the flag's 0 is the notifier's "no waiting"
	}
	if opts.Refresh = c.SlackRefresh; opts.Refresh <= 0 {
		opts.Refresh = -1 // the flag's 0 is the notifier's "never"
	}
	if c.GrafanaURL != "" {
		opts.Explore = &slack.Explore{URL: c.GrafanaURL, Datasource: c.GrafanaLokiDatasource, Selector: streamSelector(c.LokiQuery)}
	}
	if opts.Token, err = secret.Read(c.SlackTokenFile, "AUTHGUARD_SLACK_TOKEN"); err != nil {
		return nil, "", err
	}
	if opts.WebhookURL, err = secret.Read(c.SlackWebhookURLFile, "AUTHGUARD_SLACK_WEBHOOK_URL"); err != nil {
		return nil, "", err
	}
	n, err := slack.New(opts)
	return n, signing, err
}

// streamSelector is the {...} part of a LogQL query.
func streamSelector(query string) string {
	if q, err := loki.ParseQuery(query); err == nil {
		return q.Selector
	}
	return `{service="audit"}`
}

func addrOf(l net.Listener) string {
	if l == nil {
		return "off"
	}
	return l.Addr().String()
}

// storeOperator carries out Slack's buttons on the Redis store. An unblock
// publishes its event, which resets the detector like the runbook's DEL of
// both keys.
type storeOperator struct {
	store      *redisblock.Store
	neverBlock []netip.Prefix
}

func (o storeOperator) Unblock(ctx context.Context, ip netip.Addr, operator, reason string) error {
	_, err := o.store.Unblock(ctx, ip, operator, reason, time.Now())
	return err
}

func (o storeOperator) Extend(ctx context.Context, ip netip.Addr, ttl time.Duration, operator, reason string) (time.Time, error) {
	if why := responder.NeverBlocked(ip, o.neverBlock); why != "" {
		return time.Time{}, fmt.Errorf("%s is %s and is never blocked", ip, why)
	}
	now := time.Now()
	_, err := o.store.Manual(ctx, ip, ttl, operator, reason, now)
	return now.Add(ttl), err
}

// run serves the admin endpoints and runs the loop until ctx ends: at once,
// or, with leader election, while this replica holds the Lease.
func (d *daemon) run(ctx context.Context) error {
	defer d.close()
	if d.elect == nil {
		d.leading.Store(true) // before the listeners: pushes are taken at once
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Each audience has its listener and sees only its endpoints.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	if d.lifecycle {
		mux.Handle("POST /-/reload", d.reloader.handler(ctx, d))
	}
	if d.pushLn != nil {
		push := http.NewServeMux()
		push.HandleFunc("POST /loki/api/v1/push", func(w http.ResponseWriter, r *http.Request) {
			if !d.leading.Load() {
				http.Error(w, "standby: this authguard replica does not hold the lease; push to the leader", http.StatusServiceUnavailable)
				return
			}
			d.receiver.ServeHTTP(w, r)
		})
		srv := d.limits.Server(push, false)
		go srv.Serve(d.pushLn)
		defer srv.Close()
	}
	if d.slackLn != nil && d.signingSecret != "" {
		slackMux := http.NewServeMux()
		slackMux.Handle("POST /slack/interactions", d.notifier.Interactions(d.signingSecret, storeOperator{d.store, d.neverBlock}))
		srv := d.limits.Server(slackMux, false)
		go srv.Serve(d.slackLn)
		defer srv.Close()
	}
	go d.reloader.run(ctx, d)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !d.leading.Load():
			fmt.Fprintln(w, "ready: standby, another replica holds the lease")
		case d.tail != nil && d.tail.Ready(time.Now()) != nil:
			http.Error(w, "not ready: "+d.tail.Ready(time.Now()).Error(), http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	srv := d.limits.Server(mux, false)
	go srv.Serve(d.listener)
	defer srv.Close()

	// Slack outlives the loop by a little: the pages of the decisions the
	// responder still writes at shutdown are sent too.
	slackCtx, stopSlack := context.WithCancel(context.Background())
	defer stopSlack()
	slackDone := make(chan struct{})
	go func() { d.notifier.Run(slackCtx); close(slackDone) }()
	d.log.Info("authguard running", "admin", d.listener.Addr().String(), "push", addrOf(d.pushLn), "slack", addrOf(d.slackLn), "leader_election", d.elect != nil)
	var err error
	if d.elect == nil {
		err = d.loop(ctx)
	} else {
		var loopErr error
		err = leader.Run(ctx, d.elect.client, d.elect.cfg, d.log, func(ctx context.Context) {
			if loopErr = d.takeOver(); loopErr != nil {
				return
			}
			d.leading.Store(true)
			loopErr = d.loop(ctx)
			d.leading.Store(false)
		})
		if loopErr != nil && !errors.Is(loopErr, context.Canceled) {
			err = loopErr
		}
	}
	stopSlack()
	<-slackDone
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// takeOver readies a standby to lead: the rules file may have changed
// while it stood by, so it is read again.
func (d *daemon) takeOver() error {
	if d.rules == "" {
		return nil
	}
	set, err := rules.Load(d.rules)
	if err == nil {
		err = d.apply(set.Config)
	}
	if err != nil {
		return fmt.Errorf("taking over: %w", err)
	}
	return nil
}

// apply replaces the engine with one running cfg, carrying the windows
// over (detector.Engine.Reload), and keeps the eviction count going.
func (d *daemon) apply(cfg detector.Config) error {
	before := d.engine.Stats().Evictions
	next, err := d.engine.Reload(cfg)
	if err != nil {
		return err
	}
	d.evictedBefore += before - next.Stats().Evictions
	d.engine = next
	d.reloader.loaded.Set(float64(len(cfg.Rules)))
	return nil
}

// loop reads events, decides and acts until ctx ends: the tail (whose
// start-up backfill rebuilds the windows), the detector and the responder.
func (d *daemon) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The responder stops after the detector, so that every decision
	// submitted is in its queue when it flushes.
	respCtx, stopResp := context.WithCancel(context.WithoutCancel(ctx))
	defer stopResp()
	waitResp := d.resp.Start(respCtx)
	events := d.events
	tailDone := make(chan struct{})
	if d.tail != nil {
		go func() { d.tail.Run(ctx, events); close(tailDone) }()
	} else {
		close(tailDone)
	}
	// Unblocks through authguard (the CLI, a Slack button) reset the
	// detector's window for the IP, like the runbook's DEL of both keys.
	unblocks := make(chan netip.Addr, 64)
	go d.store.Subscribe(ctx, func(ev blockset.Event) {
		ip, err := netip.ParseAddr(ev.IP)
		if ev.Op != "unblock" || err != nil {
			return
		}
		if !strings.HasPrefix(ev.By, "slack:") { // a button shows its own press
			d.notifier.Unblocked(ip.Unmap(), ev.By)
		}
		select {
		case unblocks <- ip.Unmap():
		case <-ctx.Done():
		}
	}, nil)
	err := d.detect(ctx, events, unblocks)
	cancel()
	<-tailDone
	stopResp()
	waitResp()
	return err
}

// detect is the single goroutine that owns the engine: events in, decisions
// out to the responder, and resets back in when an operator cleared an IP.
func (d *daemon) detect(ctx context.Context, events <-chan detector.Event, unblocks <-chan netip.Addr) error {
	var seq uint64
	// resetAt remembers the sequence number current when each IP was reset,
	// so that several in-flight decisions about one clearance reset it once.
	resetAt := map[netip.Addr]uint64{}
	var ds []detector.Decision
	stats := time.NewTicker(time.Second)
	defer stats.Stop()
	var futureLogged time.Time
	observe := func(ev detector.Event) error {
		before := d.engine.Future()
		now := time.Now()
		ds = d.engine.Observe(ev, now, ds[:0])
		if d.engine.Future() != before {
			d.future.Add(1)
			if now.Sub(futureLogged) >= 10*time.Second {
				futureLogged = now
				sample := ev.Line // bounded by the source
				if len(sample) > 256 {
					sample = strings.ToValidUTF8(sample[:256], "")
				}
				d.log.Warn("event stamped ahead of the clock; counted at the clock's time", "client_ip", ev.IP.String(),
					"stamped", ev.Time.UTC().Format(time.RFC3339Nano), "sample", sample)
			}
		}
		for _, dec := range ds {
			seq++
			if err := d.resp.Submit(ctx, dec, ev, seq); err != nil {
				return err
			}
		}
		d.processed.Inc()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			if err := observe(ev); err != nil {
				return err
			}
		case ip := <-unblocks:
			d.engine.Reset(ip)
			resetAt[ip] = seq
		case <-stats.C:
			st := d.engine.Stats()
			d.trackedKeys.Store(uint64(st.TrackedKeys))
			d.evictions.Store(d.evictedBefore + st.Evictions)
			d.late.Store(st.Late)
		case req := <-d.reloader.requests:
			req.done <- d.apply(req.set.Config)
		case <-d.resp.ClearedSignal():
			for _, c := range d.resp.TakeCleared() {
				ip := c.Decision.IP
				if at, ok := resetAt[ip]; !ok || c.Seq > at {
					d.engine.Reset(ip)
					resetAt[ip] = seq
				}
				if err := observe(c.Event); err != nil {
					return err
				}
			}
			if len(resetAt) > 10000 {
				clear(resetAt) // bounded; only in-flight decisions need it
			}
		}
	}
}

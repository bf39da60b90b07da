package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/gomem"
	"github.com/authguard/authguard/cmd/internal/leader"
	"github.com/authguard/authguard/cmd/internal/secret"
	"github.com/authguard/authguard/cmd/internal/serve"
	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/auditsig"
	"github.com/authguard/authguard/responder/cidr"
	"github.com/authguard/authguard/responder/redisblock"
	"github.com/authguard/authguard/responder/slack"
	"github.com/authguard/authguard/rules"
)

// loadRules reads a rules file, or returns the embedded defaults for "".
func loadRules(path string, budget int64) (*rules.Set, error) {
	set, _ := rules.Default()
	if path != "" {
		var err error
		if set, err = rules.Load(path); err != nil {
			return nil, err
		}
	}
	set.Config.MemoryBudget = budget
	return set, nil
}

// detectorShare is the part of the Go memory limit the detector's windows
// may take with every rule at its cap; the rest is the garbage collector's
// headroom, the queues and the buffers.
const detectorShare = 0.4

// memoryBudget is the detector's share of the Go memory limit (0: none).
func memoryBudget(limit int64) int64 { return int64(float64(limit) * detectorShare) }

// settings are the parts of runCmd that are parsed and validated before
// anything is started; --check-config stops after them.
type settings struct {
	set        *rules.Set
	engine     *detector.Engine
	neverBlock []netip.Prefix
	lokiTLS    *tls.Config
	pushAuth   *pushAuth
	pushTLS    *tls.Config        // nil: plain HTTP
	verifier   *auditsig.Verifier // nil: audit lines are not checked
}

func (c *runCmd) settings() (*settings, error) {
	set, err := loadRules(c.Rules, c.budget)
	if err != nil {
		return nil, err
	}
	engine, err := detector.New(set.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmp.Or(c.Rules, rules.DefaultFile), err)
	}
	if c.LokiDelayFor < 0 || c.LokiDelayFor > 5 {
		return nil, fmt.Errorf("--loki-delay-for %d: Loki accepts 0 to 5 seconds", c.LokiDelayFor)
	}
	if c.LokiURL != "" {
		if _, err := cliconfig.URL("--loki-url", c.LokiURL, "http://loki:3100", "http", "https"); err != nil {
			return nil, err
		}
		if _, err := loki.ParseQuery(c.LokiQuery); err != nil {
			return nil, err
		}
		if err := c.Loki.Auth().Check(); err != nil {
			return nil, err
		}
	}
	if c.GrafanaURL != "" {
		if _, err := cliconfig.URL("--grafana-url", c.GrafanaURL, "https://grafana.example.com", "http", "https"); err != nil {
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
	keys, err := secret.AuditKeys(c.AuditVerifyKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--audit-verify-key-file: %w", err)
	}
	var verifier *auditsig.Verifier
	if len(keys) > 0 {
		verifier = auditsig.NewVerifier(keys...)
	}
	neverBlock, err := cidr.ParseList(c.NeverBlock)
	if err != nil {
		return nil, fmt.Errorf("--never-block: %w", err)
	}
	tlsConf, err := c.Loki.TLS()
	if err != nil {
		return nil, err
	}
	return &settings{set, engine, neverBlock, tlsConf, pushAuth, pushTLS, verifier}, nil
}

func (c *runCmd) build(ctx context.Context, log *slog.Logger, stdout io.Writer) (_ *daemon, err error) {
	st, err := c.settings()
	if err != nil {
		return nil, err
	}
	if c.Rules == "" {
		log.Info("using the embedded default rules", "file", rules.DefaultFile)
	}
	rdb, err := c.Client()
	if err != nil {
		return nil, err
	}
	store := redisblock.New(rdb, c.Keys(), redisblock.Options{EvidenceMaxLen: c.EvidenceMaxLen})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), gomem.Gauge(prometheus.GaugeOpts{Name: "authguard_memory_limit_bytes"}))
	ln, err := c.Limits.Listen(c.Listen)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	d := &daemon{log: log, detect: detector.NewLoop(st.engine, nil), listener: ln, limits: c.Limits, lifecycle: c.EnableLifecycle, registry: reg, store: store, neverBlock: st.neverBlock, reloader: newReloader(c.Rules, c.budget, reg), rules: c.Rules}
	d.close = func() {
		rdb.Close()
		for _, l := range []net.Listener{ln, d.pushLn, d.slackLn} {
			if l != nil {
				l.Close()
			}
		}
	}
	defer func() {
		if err != nil { // what was opened so far
			d.close()
		}
	}()
	if c.LeaderElect {
		if d.elect, err = c.election(log); err != nil {
			return nil, err
		}
	}
	d.register(reg, st.set)
	d.checkpoints = newCheckpoints(store, c.CheckpointInterval, log, reg)
	if err := c.readers(d, st, log, reg); err != nil {
		return nil, err
	}
	// Pages draw each incident's attempts per minute from Loki.
	var attempts slack.Attempts
	if d.tail != nil {
		attempts = d.tail
	}
	sec, err := c.slackSecrets()
	if err != nil {
		return nil, err
	}
	d.signingSecret = sec.signing // "" when there are no buttons
	if d.notifier, err = c.notifier(sec, stdout, log, reg, attempts, store); err != nil {
		return nil, err
	}
	if d.pushLn, d.slackLn, err = c.listeners(d.signingSecret != "", st.pushTLS); err != nil {
		return nil, err
	}
	d.resp = responder.New(responder.Options{Store: store, Notifier: d.notifier, Log: log, Registry: reg,
		DryRun: c.DryRun, NeverBlock: st.neverBlock, Cleared: d.reset})
	d.detect.Decide, d.detect.Clock, d.detect.Observed = d.resp.Submit, time.Now, d.observed
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		log.Warn("redis is not reachable yet; blocks will be queued and retried", "redis", c.Redacted(), "err", err)
	}
	return d, nil
}

// election is the Lease to hold with --leader-elect.
func (c *runCmd) election(log *slog.Logger) (*election, error) {
	client, err := leader.Client(c.Kubeconfig)
	if err != nil {
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
	return &election{client, cfg}, nil
}

// register adds the daemon's own metrics. The engine belongs to the detect
// loop; it publishes its counters in d every second for scrapes to read.
func (d *daemon) register(reg prometheus.Registerer, set *rules.Set) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_leader", Help: "1 while this replica runs the loop (holds the Lease, or runs without leader election)."}, func() float64 {
		if d.leading.Load() {
			return 1
		}
		return 0
	}))
	d.reloader.loaded.Set(float64(len(set.Config.Rules)))
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_detector_tracked_keys", Help: "Keys held in the detector's windows."}, func() float64 { return float64(d.trackedKeys.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_evictions_total", Help: "Keys evicted to keep the detector under its memory cap."}, func() float64 { return float64(d.evictions.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_late_events_total", Help: "Events dropped for arriving later than the out-of-order tolerance."}, func() float64 { return float64(d.late.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_future_events_total", Help: "Events stamped more than 10 minutes ahead of the daemon's clock, counted at the clock's time."}, func() float64 { return float64(d.future.Load()) }),
	)
	d.processed = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_events_processed_total", Help: "Events run through the detector."})
	d.stateLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_redis_state_lost_total", Help: "Times Redis was found to have lost its data (the epoch key gone)."})
	reg.MustRegister(d.processed, d.stateLost)
}

// readers builds what turns audit lines into events: the parser, the push
// receiver and, with --loki-url, the Loki reader.
func (c *runCmd) readers(d *daemon, st *settings, log *slog.Logger, reg prometheus.Registerer) error {
	fields := loki.DefaultFields.WithAttrs(c.AuditFields...).WithAttrs(st.set.Fields()...)
	d.reloader.reads = fields.Attrs
	parser := loki.NewParser(fields, c.MaxLineBytes, c.MaxLineHardBytes, c.UseLineTime)
	if st.verifier != nil {
		parser.Verify(st.verifier)
	}
	lokiMetrics := loki.NewMetrics(reg)
	d.events = make(chan detector.Event, 1024)
	d.receiver = loki.NewReceiver(parser, d.events, c.PushMaxBytes, log, lokiMetrics, reg)
	d.receiver.Authorize = st.pushAuth.authorize
	if c.PushListen != "" && !st.pushAuth.authenticates() {
		log.Warn("the push receiver takes pushes without credentials (--push-allow-unauthenticated): whoever reaches it can have any address blocked")
	}
	if c.LokiURL == "" {
		return nil
	}
	var err error
	d.tail, err = loki.NewTail(loki.Config{URL: c.LokiURL, Query: c.LokiQuery, DelayFor: c.LokiDelayFor,
		Backfill: min(st.set.MaxWindow, c.LokiBackfillMax), DedupWindow: c.LokiDedupWindow, Settle: c.LokiSettle,
		SweepInterval: c.LokiSweepInterval, SweepDelay: c.LokiSweepDelay, TailMaxRate: c.LokiTailMaxRate, MaxLag: c.LokiMaxLag,
		Header: c.Loki.Auth().Apply, TLS: st.lokiTLS}, parser, log, lokiMetrics)
	return err
}

// listeners opens the push and Slack listeners that are asked for (the
// push one over TLS when pushTLS is set). Slack's
// buttons need theirs: it is the endpoint exposed to the internet, and
// nothing else is served there.
func (c *runCmd) listeners(buttons bool, pushTLS *tls.Config) (push, slack net.Listener, err error) {
	if c.PushListen != "" {
		if push, err = c.Limits.Listen(c.PushListen); err != nil {
			return nil, nil, err
		}
		if pushTLS != nil {
			push = tls.NewListener(push, pushTLS)
		}
	}
	// Without a signing secret there is nothing to serve there: a listener
	// that accepts and never answers would only hold Slack's retries.
	if c.SlackListen != "" && buttons {
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
// printBudget says what each rule's windows may take.
func printBudget(w io.Writer, cfg detector.Config) {
	if cfg.MemoryBudget > 0 {
		fmt.Fprintf(w, "memory: the windows take up to %s of the detector's %s (%.0f %% of the Go memory limit, %s)\n",
			detector.MiB(cfg.Footprint()), detector.MiB(cfg.MemoryBudget), detectorShare*100, detector.MiB(gomem.Limit()))
	} else {
		fmt.Fprintf(w, "memory: no Go memory limit (GOMEMLIMIT or a container limit); the windows take up to %s\n", detector.MiB(cfg.Footprint()))
	}
	for i, n := range cfg.Caps() {
		r := cfg.Rules[i]
		fmt.Fprintf(w, "  rule %s: up to %d keys, %s\n", r.Name, n, detector.MiB(int64(n)*int64(detector.KeyBytes(r))))
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none: push receiver only)"
	}
	return s
}

// notifier builds the pager from the Slack settings and secrets (read
// once, by slackSecrets).
func (c *runCmd) notifier(sec slackSecrets, stdout io.Writer, log *slog.Logger, reg prometheus.Registerer, attempts slack.Attempts, messages slack.Messages) (*slack.Notifier, error) {
	opts := slack.Options{Channel: c.SlackChannel,
		Routes: c.SlackRoute, Mentions: c.SlackMention, Coalesce: c.SlackCoalesce, MaskUsernames: c.SlackMaskUsernames,
		Buttons: sec.signing != "", Attempts: attempts, Messages: messages, Log: log, Registry: reg,
		Transport: transports[sec.mode](c, stdout, sec.secret)}
	if opts.Coalesce <= 0 {
		opts.Coalesce = -1 // the flag's 0 is the notifier's "no waiting"
	}
	if opts.Refresh = c.SlackRefresh; opts.Refresh <= 0 {
		opts.Refresh = -1 // the flag's 0 is the notifier's "never"
	}
	if c.GrafanaURL != "" {
		opts.Explore = &slack.Explore{URL: c.GrafanaURL, Datasource: c.GrafanaLokiDatasource, Selector: streamSelector(c.LokiQuery)}
	}
	return slack.New(opts)
}

// transports open each way of paging from its secret (the terminal needs
// none).
var transports = map[string]func(c *runCmd, stdout io.Writer, secret string) slack.Transport{
	"bot":      func(c *runCmd, _ io.Writer, token string) slack.Transport { return slack.Bot(token, c.SlackAPIURL) },
	"webhook":  func(_ *runCmd, _ io.Writer, url string) slack.Transport { return slack.Webhook(url) },
	"terminal": func(_ *runCmd, stdout io.Writer, _ string) slack.Transport { return slack.Terminal(stdout) },
}

// slackSecrets are Slack's secrets as set, and the way of paging they
// choose.
type slackSecrets struct {
	// mode is a key of transports: a bot token before a webhook URL, else
	// the terminal; secret is its token or URL.
	mode, secret string
	// signing is the app's signing secret ("": no buttons).
	signing string
}

func (c *runCmd) slackSecrets() (slackSecrets, error) {
	var s slackSecrets
	var token, url string
	for _, r := range []struct {
		to        *string
		file, env string
	}{
		{&token, c.SlackTokenFile, "AUTHGUARD_SLACK_TOKEN"},
		{&url, c.SlackWebhookURLFile, "AUTHGUARD_SLACK_WEBHOOK_URL"},
		{&s.signing, c.SlackSigningSecretFile, "AUTHGUARD_SLACK_SIGNING_SECRET"},
	} {
		v, err := secret.Read(r.file, r.env)
		if err != nil {
			return s, err
		}
		*r.to = v
	}
	s.mode = "terminal"
	switch {
	case token != "":
		s.mode, s.secret = "bot", token
	case url != "":
		s.mode, s.secret = "webhook", url
	}
	if s.signing != "" && c.SlackListen == "" {
		return s, errors.New("a Slack signing secret (--slack-signing-secret-file or AUTHGUARD_SLACK_SIGNING_SECRET) needs --slack-listen: Slack's interactions are served on a listener of their own")
	}
	return s, nil
}

// describe says how pages go out, for --check-config.
func (s slackSecrets) describe(listen string) string {
	d := map[string]string{"bot": "bot token (a message per incident)", "webhook": "incoming webhook (a post per page)", "terminal": "none (pages on stdout)"}[s.mode]
	if s.signing != "" {
		return d + ", buttons on " + listen
	}
	return d + ", no buttons"
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

func (o storeOperator) Unblock(ctx context.Context, target netip.Prefix, operator, reason string) error {
	_, err := o.store.Unblock(ctx, target, operator, reason, time.Now())
	return err
}

func (o storeOperator) Extend(ctx context.Context, target netip.Prefix, ttl time.Duration, operator, reason string) (time.Time, error) {
	if why := responder.NeverBlocked(target, o.neverBlock); why != "" {
		return time.Time{}, fmt.Errorf("%s is %s and is never blocked", target, why)
	}
	now := time.Now()
	_, err := o.store.Manual(ctx, target, ttl, operator, reason, now)
	return now.Add(ttl), err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/redisblock"
	"github.com/authguard/authguard/responder/slack"
	"github.com/authguard/authguard/rules"
)

type runCmd struct {
	Rules string `help:"Rules file (YAML). Empty: the embedded default rules (runbook SEC-010)." placeholder:"FILE"`

	LokiURL      string `help:"Loki base URL, e.g. http://loki:3100." placeholder:"URL" required:""`
	LokiQuery    string `help:"LogQL query selecting the audit events." default:"${loki_query}"`
	LokiTenant   string `help:"Tenant sent as X-Scope-OrgID." placeholder:"ID"`
	LokiDelayFor int    `help:"Seconds Loki holds lines back before tailing them (0-5)." default:"0"`

	RedisURL       string `help:"Redis URL (redis:// or rediss://)." default:"redis://127.0.0.1:6379/0" placeholder:"URL"`
	RedisKeyPrefix string `help:"Prefix put before every Redis key and channel." placeholder:"PREFIX"`

	SlackTokenFile      string `help:"File holding the Slack bot token (bot-token mode)." placeholder:"FILE"`
	SlackChannel        string `help:"Slack channel for incident pages (bot-token mode)." placeholder:"CHANNEL"`
	SlackWebhookURLFile string `help:"File holding a Slack incoming-webhook URL (fallback mode)." placeholder:"FILE"`
	SlackAPIURL         string `name:"slack-api-url" help:"Slack API base URL (for testing)." hidden:""`

	Listen       string `help:"Address for /metrics, /healthz and /readyz." default:":9090"`
	MaxLineBytes int    `help:"Longest log line read; longer lines are counted and skipped." default:"16384"`
	UseLineTime  bool   `help:"Take event time from the line's ts field instead of the Loki entry timestamp."`
	LogLevel     string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error"`
	LogFormat    string `help:"json or text." default:"json" enum:"json,text"`
}

func (c *runCmd) Run(ctx context.Context, e *env) error {
	log, err := newLogger(e.stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	d, err := c.build(ctx, log, e.stdout)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// daemon is a configured, not yet running authguard.
type daemon struct {
	log      *slog.Logger
	engine   *detector.Engine
	tail     *loki.Tail
	resp     *responder.Responder
	listener net.Listener
	registry *prometheus.Registry
	events   prometheus.Counter
	close    func()
}

func (c *runCmd) build(ctx context.Context, log *slog.Logger, stdout io.Writer) (*daemon, error) {
	var set *rules.Set
	if c.Rules == "" {
		set, _ = rules.Default()
		log.Info("using the embedded default rules", "file", rules.DefaultFile)
	} else {
		var err error
		if set, err = rules.Load(c.Rules); err != nil {
			return nil, err
		}
	}
	engine, err := detector.New(set.Config)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if c.LokiDelayFor < 0 || c.LokiDelayFor > 5 {
		return nil, fmt.Errorf("--loki-delay-for %d: Loki accepts 0 to 5 seconds", c.LokiDelayFor)
	}
	rdb, err := redisblock.ParseURL(c.RedisURL)
	if err != nil {
		return nil, err
	}
	store := redisblock.New(rdb, redisblock.DefaultKeys.WithPrefix(c.RedisKeyPrefix))
	notifier, err := c.notifier(stdout)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_detector_tracked_keys", Help: "Keys held in the detector's windows."}, func() float64 { return float64(engine.Stats().TrackedKeys) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "authguard_detector_evictions_total", Help: "Keys evicted to keep the detector under its memory cap."}, func() float64 { return float64(engine.Stats().Evictions) }),
	)
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	d := &daemon{log: log, engine: engine, listener: ln, registry: reg}
	d.events = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_events_processed_total", Help: "Events run through the detector."})
	reg.MustRegister(d.events)
	d.tail = loki.NewTail(loki.Config{URL: c.LokiURL, Query: c.LokiQuery, Tenant: c.LokiTenant, DelayFor: c.LokiDelayFor},
		loki.NewParser(loki.DefaultFields, c.MaxLineBytes, c.UseLineTime), log, loki.NewMetrics(reg))
	d.resp = responder.New(responder.Options{Blocker: store, Notifier: notifier, Log: log, Registry: reg})
	d.close = func() { rdb.Close(); ln.Close() }
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		log.Warn("redis is not reachable yet; blocks will be queued and retried", "url", redactURL(c.RedisURL), "err", err)
	}
	return d, nil
}

func (c *runCmd) notifier(stdout io.Writer) (responder.Notifier, error) {
	opts := slack.Options{Channel: c.SlackChannel, APIURL: c.SlackAPIURL, Terminal: stdout}
	var err error
	if c.SlackTokenFile != "" {
		if opts.Token, err = readSecret(c.SlackTokenFile); err != nil {
			return nil, err
		}
	}
	if c.SlackWebhookURLFile != "" {
		if opts.WebhookURL, err = readSecret(c.SlackWebhookURLFile); err != nil {
			return nil, err
		}
	}
	return slack.New(opts)
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}

// redactURL hides a password in a URL before it is logged.
func redactURL(raw string) string {
	if i := strings.Index(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "***" + raw[i:]
		}
	}
	return raw
}

// run serves the admin endpoints and runs the loop until ctx ends.
func (d *daemon) run(ctx context.Context) error {
	defer d.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.tail.Connected() {
			http.Error(w, "not ready: not tailing loki", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(d.listener)
	defer srv.Close()

	waitResp := d.resp.Start(ctx)
	events := make(chan detector.Event, 1024)
	tailDone := make(chan struct{})
	go func() { d.tail.Run(ctx, events); close(tailDone) }()
	d.log.Info("authguard running", "admin", d.listener.Addr().String())
	err := d.detect(ctx, events)
	cancel()
	<-tailDone
	waitResp()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// detect is the single goroutine that owns the engine: events in, decisions
// out to the responder, and resets back in when an operator cleared an IP.
func (d *daemon) detect(ctx context.Context, events <-chan detector.Event) error {
	var seq uint64
	// resetAt remembers the sequence number current when each IP was reset,
	// so that several in-flight decisions about one clearance reset it once.
	resetAt := map[netip.Addr]uint64{}
	var ds []detector.Decision
	observe := func(ev detector.Event) error {
		ds = d.engine.Observe(ev, ds[:0])
		for _, dec := range ds {
			seq++
			if err := d.resp.Submit(ctx, dec, ev, seq); err != nil {
				return err
			}
		}
		d.events.Inc()
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

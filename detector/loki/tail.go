package loki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
)

// DefaultQuery selects the audit events of runbook SEC-010.
const DefaultQuery = `{service="audit"} | json | action="auth_failed"`

// Config says where and what to tail.
type Config struct {
	// URL is Loki's base URL, e.g. http://loki:3100.
	URL string
	// Query is the LogQL query; DefaultQuery when empty.
	Query string
	// Tenant is sent as X-Scope-OrgID when set.
	Tenant string
	// DelayFor asks Loki to hold lines back this many seconds (0 to 5).
	DelayFor int
	// Limit is the tail's history limit.
	Limit int
}

// Metrics counts what the source reads and skips.
type Metrics struct {
	Lines      prometheus.Counter
	Skipped    *prometheus.CounterVec
	Reconnects prometheus.Counter
	Dropped    prometheus.Counter
	Lag        prometheus.Gauge
	Connected  prometheus.Gauge
}

// NewMetrics registers the source's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Lines:      prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_lines_total", Help: "Audit lines read from Loki and turned into events."}),
		Skipped:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_loki_lines_skipped_total", Help: "Lines read from Loki and skipped, by reason."}, []string{"reason"}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_reconnects_total", Help: "Tail connections re-established after a close or error."}),
		Dropped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_dropped_entries_total", Help: "Entries Loki reported as dropped for this tail."}),
		Lag:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_lag_seconds", Help: "Now minus the newest event time read."}),
		Connected:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_tail_connected", Help: "1 while the websocket tail is open."}),
	}
	for _, r := range []string{SkipTooLong, SkipNotJSON, SkipNoAction, SkipNoClientIP, SkipBadClientIP, SkipBadTime} {
		m.Skipped.WithLabelValues(r)
	}
	reg.MustRegister(m.Lines, m.Skipped, m.Reconnects, m.Dropped, m.Lag, m.Connected)
	return m
}

// Tail reads events from Loki's websocket tail endpoint, reconnecting with
// jittered exponential backoff after any close or error. On reconnect it
// resumes at the newest timestamp it has seen and drops lines it already
// delivered at that nanosecond.
type Tail struct {
	cfg     Config
	parser  *Parser
	log     *slog.Logger
	metrics *Metrics
	dialer  *websocket.Dialer

	connected atomic.Bool

	lastTS   int64
	atLastTS map[string]struct{} // lines delivered at lastTS
	sampled  sync.Map            // reason -> time of the last sample logged
}

// NewTail returns a tail source. cfg.URL must be set.
func NewTail(cfg Config, p *Parser, log *slog.Logger, m *Metrics) *Tail {
	if cfg.Query == "" {
		cfg.Query = DefaultQuery
	}
	return &Tail{cfg: cfg, parser: p, log: log, metrics: m, dialer: &websocket.Dialer{HandshakeTimeout: 10 * time.Second}}
}

// Connected reports whether the websocket tail is open now.
func (t *Tail) Connected() bool { return t.connected.Load() }

// Run delivers events to out until ctx ends. It returns only ctx's error.
func (t *Tail) Run(ctx context.Context, out chan<- detector.Event) error {
	start := time.Now().UnixNano()
	backoff := 0
	for {
		err := t.session(ctx, start, out, func() { backoff = 0 })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if t.lastTS != 0 {
			start = t.lastTS
		}
		wait := retryDelay(backoff)
		backoff++
		t.log.Warn("loki tail interrupted; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		t.metrics.Reconnects.Inc()
	}
}

// retryDelay is full-jitter exponential backoff from 250 ms to 30 s.
func retryDelay(attempt int) time.Duration {
	ceiling := 250 * time.Millisecond << min(attempt, 7)
	ceiling = min(ceiling, 30*time.Second)
	return ceiling/2 + rand.N(ceiling/2)
}

func (t *Tail) tailURL(start int64) (string, error) {
	u, err := url.Parse(t.cfg.URL)
	if err != nil {
		return "", fmt.Errorf("loki url %q: %w", t.cfg.URL, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("loki url %q: want http or https", t.cfg.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/loki/api/v1/tail"
	q := url.Values{"query": {t.cfg.Query}, "start": {strconv.FormatInt(start, 10)}}
	if t.cfg.DelayFor > 0 {
		q.Set("delay_for", strconv.Itoa(t.cfg.DelayFor))
	}
	if t.cfg.Limit > 0 {
		q.Set("limit", strconv.Itoa(t.cfg.Limit))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

type frame struct {
	Streams []struct {
		Stream map[string]string `json:"stream"`
		Values [][2]string       `json:"values"`
	} `json:"streams"`
	DroppedEntries []struct {
		Timestamp string `json:"timestamp"`
	} `json:"dropped_entries"`
}

// session runs one websocket connection until it fails.
func (t *Tail) session(ctx context.Context, start int64, out chan<- detector.Event, connected func()) error {
	target, err := t.tailURL(start)
	if err != nil {
		return err
	}
	h := http.Header{}
	if t.cfg.Tenant != "" {
		h.Set("X-Scope-OrgID", t.cfg.Tenant)
	}
	conn, resp, err := t.dialer.DialContext(ctx, target, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			return fmt.Errorf("tail %s: %s: %s", t.cfg.URL, resp.Status, strings.TrimSpace(string(body)))
		}
		return fmt.Errorf("tail %s: %w", t.cfg.URL, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetReadLimit(64 << 20)
	const idle = 30 * time.Second // Loki pings every second
	conn.SetReadDeadline(time.Now().Add(idle))
	conn.SetPingHandler(func(data string) error {
		conn.SetReadDeadline(time.Now().Add(idle))
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	t.log.Info("tailing loki", "url", t.cfg.URL, "query", t.cfg.Query)
	t.metrics.Connected.Set(1)
	t.connected.Store(true)
	defer func() { t.metrics.Connected.Set(0); t.connected.Store(false) }()
	connected()
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("loki closed the tail: %d %s", ce.Code, ce.Text)
			}
			return fmt.Errorf("tail %s: %w", t.cfg.URL, err)
		}
		conn.SetReadDeadline(time.Now().Add(idle))
		var f frame
		if err := json.Unmarshal(msg, &f); err != nil {
			return fmt.Errorf("tail %s: undecodable frame: %w", t.cfg.URL, err)
		}
		if n := len(f.DroppedEntries); n > 0 {
			t.metrics.Dropped.Add(float64(n))
			t.log.Warn("loki dropped entries for this tail", "count", n)
		}
		if err := t.deliver(ctx, &f, out); err != nil {
			return err
		}
	}
}

type tsLine struct {
	ts   int64
	line string
}

// deliver merges a frame's streams into time order, drops lines already
// delivered, parses and sends the rest.
func (t *Tail) deliver(ctx context.Context, f *frame, out chan<- detector.Event) error {
	var entries []tsLine
	for _, s := range f.Streams {
		for _, v := range s.Values {
			ts, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil {
				t.skip(&SkipError{SkipBadTime, "entry timestamp " + truncate(v[0], 32)}, v[1])
				continue
			}
			entries = append(entries, tsLine{ts, v[1]})
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].ts < entries[j].ts })
	for _, e := range entries {
		if e.ts < t.lastTS {
			continue
		}
		if e.ts == t.lastTS {
			if _, seen := t.atLastTS[e.line]; seen {
				continue
			}
		} else {
			t.lastTS = e.ts
			clear(t.atLastTS)
		}
		if t.atLastTS == nil {
			t.atLastTS = map[string]struct{}{}
		}
		t.atLastTS[e.line] = struct{}{}
		ev, err := t.parser.Parse(time.Unix(0, e.ts).UTC(), e.line)
		if err != nil {
			t.skip(err, e.line)
			continue
		}
		t.metrics.Lines.Inc()
		t.metrics.Lag.Set(time.Since(ev.Time).Seconds())
		select {
		case out <- ev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// skip counts a skipped line and logs a sample of it at most every 10 s per
// reason, so a flood of bad lines cannot flood the log.
func (t *Tail) skip(err error, line string) {
	reason := "unknown"
	if se, ok := IsSkip(err); ok {
		reason = se.Reason
	}
	t.metrics.Skipped.WithLabelValues(reason).Inc()
	now := time.Now()
	if last, ok := t.sampled.Load(reason); ok && now.Sub(last.(time.Time)) < 10*time.Second {
		return
	}
	t.sampled.Store(reason, now)
	t.log.Warn("skipped log line", "reason", reason, "err", err.Error(), "sample", truncate(line, 256))
}

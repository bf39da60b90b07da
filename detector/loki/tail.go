package loki

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
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
	"github.com/authguard/authguard/responder/backoff"
	"github.com/authguard/authguard/responder/clip"
)

// Config says where and what to read.
type Config struct {
	// URL is Loki's base URL, e.g. http://loki:3100.
	URL string
	// Query is the LogQL query; DefaultQuery when empty. Loki is sent its
	// stream selector and line filters; the stages after them are checked
	// here (see Query).
	Query string
	// DelayFor asks Loki to hold lines back this many seconds (0 to 5).
	DelayFor int
	// Backfill is how far back the first catch-up reaches at start, so a
	// restarted daemon sees the events of its longest window again.
	Backfill time.Duration
	// DedupWindow is how far behind the sweeper's mark (SweepDelay behind
	// now) the source still recognises repeats, and so how far back it
	// re-reads after a gap (default 1m). Entries older than that which
	// reach Loki late are still delivered by the live tail.
	DedupWindow time.Duration
	// PageLimit is query_range's limit per page (default and maximum 5000).
	PageLimit int
	// Settle is how long a new tail runs before the catch-up query that
	// closes the gap behind it (default 2s). Loki only starts sending an
	// entry live once the tail is registered on every ingester, and the
	// tail's own history holds just the newest few lines, so the catch-up
	// must be asked after that; the live lines wait meanwhile, to keep
	// each stream in order.
	Settle time.Duration
	// SweepInterval is how often the sweeper re-reads the recent past with
	// query_range behind the live tail (default 1s), and how often the
	// reader polls when it reads by query_range alone.
	SweepInterval time.Duration
	// SweepDelay is how long after its timestamp an entry is expected to be
	// in Loki (push batching and retries; default 2s): each sweep reads up
	// to now minus this, and a poll re-reads this much of the past.
	SweepDelay time.Duration
	// NoSweep turns the sweeper off, leaving the live tail alone between
	// reconnects (tests use it to show what a tail loses).
	NoSweep bool
	// TailMaxRate is the rate, in entries per second, above which the reader
	// stops tailing and polls query_range alone (default 1500; a Loki tail
	// carries about 2,000 entries/s at most). It tails again once the rate
	// has stayed below half of it for 30 s.
	TailMaxRate int
	// MaxLag is how far behind now the reader may be known complete before
	// Ready reports it (default 30s).
	MaxLag time.Duration

	// Header sets the tenant, credentials and extra headers of every
	// request (nil: none). It is called for every connection and query,
	// so it may read files a rotated Secret rewrites.
	Header func(http.Header) error
	// TLS configures https and wss (custom CA, client certificate).
	TLS *tls.Config
}

// Metrics counts what the source reads and skips.
type Metrics struct {
	Lines        prometheus.Counter
	Skipped      *prometheus.CounterVec
	Filtered     prometheus.Counter
	Duplicates   prometheus.Counter
	Reconnects   prometheus.Counter
	CatchUpPages prometheus.Counter
	Dropped      prometheus.Counter
	Recovered    prometheus.Counter
	Sweeps       *prometheus.CounterVec
	Lag          prometheus.Gauge
	SweepLag     prometheus.Gauge
	ReadDelay    prometheus.Histogram
	Connected    prometheus.Gauge
	Polling      prometheus.Gauge
}

// NewMetrics registers the source's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Lines:        prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_lines_total", Help: "Audit lines read from Loki and turned into events."}),
		Skipped:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_loki_lines_skipped_total", Help: "Lines read from Loki and skipped, by reason."}, []string{"reason"}),
		Filtered:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_lines_filtered_total", Help: "Lines Loki sent that the query's own stages (| json, label filters), checked by authguard, leave out."}),
		Duplicates:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_duplicates_total", Help: "Entries read twice (catch-up or sweep overlapping the tail) and delivered once."}),
		Reconnects:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_reconnects_total", Help: "Tail connections re-established after a close or error."}),
		CatchUpPages: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_catchup_pages_total", Help: "query_range pages read to catch up, sweep or poll."}),
		Dropped:      prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_dropped_entries_total", Help: "Entries Loki reported as dropped for this tail (each gap is caught up)."}),
		Recovered:    prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_recovered_lines_total", Help: "Entries the live tail never delivered that the sweeper read with query_range."}),
		Sweeps:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_loki_sweeps_total", Help: "query_range sweeps behind the tail (and polls), by result."}, []string{"result"}),
		Lag:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_lag_seconds", Help: "Now minus the newest entry time read."}),
		SweepLag:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_sweep_lag_seconds", Help: "Now minus the time up to which every entry in Loki is known to have been read."}),
		ReadDelay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authguard_loki_read_delay_seconds", Help: "Time from an entry's timestamp to its reading (start-up backfill not included).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300}}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_tail_connected", Help: "1 while the websocket tail is open."}),
		Polling:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_polling", Help: "1 while the reader polls query_range alone because the rate is above what a tail carries."}),
	}
	for _, r := range []string{SkipTooLong, SkipNotJSON, SkipNoAction, SkipNoClientIP, SkipBadClientIP, SkipBadTime, SkipSigUnsigned, SkipSigUnknown, SkipSigBad, SkipSigReplayed} {
		m.Skipped.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.Sweeps.WithLabelValues(r)
	}
	reg.MustRegister(m.Lines, m.Skipped, m.Filtered, m.Duplicates, m.Reconnects, m.CatchUpPages, m.Dropped, m.Recovered, m.Sweeps,
		m.Lag, m.SweepLag, m.ReadDelay, m.Connected, m.Polling)
	return m
}

// Tail reads every matching entry once. It tails Loki over the websocket
// API and, before every tail (at start and after any close, error or
// dropped entries), catches up with query_range from where it left off.
// Behind the live tail a sweeper re-reads the recent past with query_range
// every SweepInterval and delivers what the tail missed (Loki's tail drops
// entries under load without saying so); above TailMaxRate it polls
// query_range alone. Entries seen twice are delivered once.
type Tail struct {
	cfg     Config
	query   *Query
	parser  *Parser
	log     *slog.Logger
	metrics *Metrics
	dialer  *websocket.Dialer
	client  *http.Client

	connected atomic.Bool
	polling   atomic.Bool
	// sweptUntil: every entry with a timestamp before it that was in Loki
	// SweepDelay after that timestamp has been delivered.
	sweptUntil atomic.Int64
	newest     int64 // newest entry time delivered (reader goroutine only)
	dedup      *dedup
	skips      skipLog
	recovered  rateLog
}

// NewTail returns a source. cfg.URL must be set; a query that cannot be
// split (see ParseQuery) is an error.
func NewTail(cfg Config, p *Parser, log *slog.Logger, m *Metrics) (*Tail, error) {
	if cfg.Query == "" {
		cfg.Query = DefaultQuery
	}
	q, err := ParseQuery(cfg.Query)
	if err != nil {
		return nil, err
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = time.Minute
	}
	if cfg.PageLimit <= 0 || cfg.PageLimit > 5000 {
		cfg.PageLimit = 5000
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Second
	}
	if cfg.SweepDelay <= 0 {
		cfg.SweepDelay = 2 * time.Second
	}
	if cfg.TailMaxRate <= 0 {
		cfg.TailMaxRate = 1500
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = 30 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS
	return &Tail{cfg: cfg, query: q, parser: p, log: log, metrics: m,
		dialer: &websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: cfg.TLS, Proxy: http.ProxyFromEnvironment},
		client: &http.Client{Transport: tr, Timeout: time.Minute},
		dedup:  newDedup(1 << 20), skips: skipLog{log: log, metrics: m},
		recovered: rateLog{log: log, every: 10 * time.Second}}, nil
}

// Connected reports whether the websocket tail is open now.
func (t *Tail) Connected() bool { return t.connected.Load() }

// Ready says why the reader is not ready, or nil: it must be tailing (or
// polling) and known complete up to MaxLag ago.
func (t *Tail) Ready(now time.Time) error {
	if !t.connected.Load() && !t.polling.Load() {
		return errors.New("not reading loki: the tail is not open")
	}
	if t.cfg.NoSweep {
		return nil
	}
	if lag := now.Sub(time.Unix(0, t.sweptUntil.Load())); lag > t.cfg.MaxLag {
		return fmt.Errorf("loki reader is %s behind (bound %s)", lag.Round(time.Second), t.cfg.MaxLag)
	}
	return nil
}

// errSwitch ends a session to change between tailing and polling.
var errSwitch = errors.New("switching between tailing and polling")

// Run delivers events to out until ctx ends. It returns only ctx's error.
func (t *Tail) Run(ctx context.Context, out chan<- detector.Event) error {
	t.sweptUntil.Store(time.Now().Add(-t.cfg.Backfill).UnixNano())
	backoff := 0
	for {
		var err error
		if t.polling.Load() {
			err = t.poll(ctx, out, func() { backoff = 0 })
		} else {
			err = t.session(ctx, out, func() { backoff = 0 })
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errSwitch) {
			continue
		}
		wait := retryDelay(backoff)
		if errors.Is(err, errTooManyTails) {
			wait = max(wait, 30*time.Second) // every retry would take a slot again
		}
		backoff++
		t.log.Warn("loki read interrupted; catching up and reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		t.metrics.Reconnects.Inc()
	}
}

// resumeFrom is where a catch-up starts: the de-duplication window behind
// where the sweeper is complete, so that entries that reached Loki late
// are read too.
func (t *Tail) resumeFrom() int64 {
	return t.dedup.start(t.sweptUntil.Load() - int64(t.cfg.DedupWindow))
}

// advance moves the sweeper's mark to until (never back), forgets the
// entries no read reaches again, and publishes the lag.
func (t *Tail) advance(until int64) {
	if until > t.sweptUntil.Load() {
		t.sweptUntil.Store(until)
		t.dedup.forget(until - int64(t.cfg.DedupWindow))
	}
	now := time.Now()
	t.metrics.SweepLag.Set(now.Sub(time.Unix(0, t.sweptUntil.Load())).Seconds())
	if t.newest > 0 {
		t.metrics.Lag.Set(now.Sub(time.Unix(0, t.newest)).Seconds())
	}
}

// retryDelay is jittered exponential backoff from 250 ms to 30 s.
func retryDelay(attempt int) time.Duration {
	return backoff.Jitter(attempt, 250*time.Millisecond, 30*time.Second)
}

// futureGrace is how far ahead of the daemon's clock a catch-up reads:
// Loki's default creation_grace_period.
const futureGrace = 10 * time.Minute

var errTooManyTails = errors.New("loki's limit of concurrent tails per tenant is reached (max_concurrent_tail_requests); backing off")

func (t *Tail) endpoint(path string, q url.Values, ws bool) (string, error) {
	u, err := url.Parse(t.cfg.URL)
	if err != nil {
		return "", fmt.Errorf("loki url %q: %w", t.cfg.URL, err)
	}
	switch {
	case u.Scheme == "http" && ws:
		u.Scheme = "ws"
	case u.Scheme == "https" && ws:
		u.Scheme = "wss"
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("loki url %q: want http or https", t.cfg.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// header builds the request headers: tenant, auth, extras.
func (t *Tail) header() (http.Header, error) {
	h := http.Header{}
	if t.cfg.Header == nil {
		return h, nil
	}
	if err := t.cfg.Header(h); err != nil {
		return nil, err
	}
	return h, nil
}

// refusal turns Loki's refusal of a request into an error that says what to
// change.
func (t *Tail) refusal(what string, status int, body string) error {
	body = strings.TrimSpace(body)
	switch {
	case status == http.StatusUnauthorized && strings.Contains(body, "no org id"):
		return fmt.Errorf("loki %s refused the %s: 401 %s: this Loki is multi-tenant; set --loki-tenant", t.cfg.URL, what, body)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("loki %s refused the %s: %d %s: check the Loki credentials", t.cfg.URL, what, status, body)
	case status == http.StatusBadRequest:
		return fmt.Errorf("loki %s refused the %s: 400 %s: check --loki-query and --loki-delay-for", t.cfg.URL, what, body)
	}
	return fmt.Errorf("loki %s: %s: %d %s", t.cfg.URL, what, status, body)
}

type wireStream struct {
	Stream map[string]string `json:"stream"`
	Values [][2]string       `json:"values"`
}

type frame struct {
	Streams        []wireStream `json:"streams"`
	DroppedEntries []struct {
		Timestamp string `json:"timestamp"`
	} `json:"dropped_entries"`
}

// source says how an entry was read.
type source int

const (
	fromTail    source = iota
	fromCatchUp        // the catch-up before a tail, or the backfill at start
	fromSweep          // the sweeper behind the tail, or a poll
)

// rateWindow is how long a rate is measured before the reader switches
// between tailing and polling.
const (
	rateWindow    = 3 * time.Second
	tailAgainCalm = 30 * time.Second
)

// session runs one websocket tail, after catching up from where the reader
// left off, with the sweeper behind it.
func (t *Tail) session(ctx context.Context, out chan<- detector.Event, connected func()) error {
	h, err := t.header()
	if err != nil {
		return err
	}
	// The tail starts now; the catch-up after Settle covers everything
	// before. Entries in both are delivered once.
	start := time.Now().UnixNano()
	q := url.Values{"query": {t.query.Remote}, "start": {strconv.FormatInt(start, 10)}}
	if t.cfg.DelayFor > 0 {
		q.Set("delay_for", strconv.Itoa(t.cfg.DelayFor))
	}
	target, err := t.endpoint("/loki/api/v1/tail", q, true)
	if err != nil {
		return err
	}
	conn, resp, err := t.dialer.DialContext(ctx, target, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			return t.refusal("tail", resp.StatusCode, string(body))
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

	// Frames are read while the catch-up and sweeps run, so Loki does not
	// drop entries for a slow client meanwhile.
	frames := make(chan frame, 256)
	readErr := make(chan error, 1)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		defer close(frames)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				switch {
				case readCtx.Err() != nil:
				case errors.As(err, &ce) && strings.Contains(ce.Text, "max concurrent tail requests"):
					readErr <- fmt.Errorf("%w: %s", errTooManyTails, ce.Text)
				case errors.As(err, &ce):
					readErr <- fmt.Errorf("loki closed the tail: %d %s", ce.Code, ce.Text)
				default:
					readErr <- fmt.Errorf("tail %s: %w", t.cfg.URL, err)
				}
				return
			}
			conn.SetReadDeadline(time.Now().Add(idle))
			f, err := decodeFrame(msg)
			if err != nil {
				readErr <- fmt.Errorf("tail %s: undecodable frame: %w", t.cfg.URL, err)
				return
			}
			select {
			case frames <- f:
			case <-readCtx.Done():
				return
			}
		}
	}()

	select {
	case <-time.After(t.cfg.Settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	// The catch-up reaches past now: an entry stamped ahead of this
	// clock (a pusher's clock runs fast; Loki accepts up to its
	// creation_grace_period, 10m by default) and written while no tail
	// was registered would otherwise fall between the catch-up and the
	// tail.
	caughtUpAt := time.Now()
	if _, err := t.catchUp(ctx, h, t.resumeFrom(), caughtUpAt.Add(futureGrace).UnixNano(), fromCatchUp, out); err != nil {
		return err
	}
	t.advance(caughtUpAt.Add(-t.cfg.SweepDelay).UnixNano())
	t.log.Info("tailing loki", "url", t.cfg.URL, "query", t.query.Full, "sent_to_loki", t.query.Remote)
	t.metrics.Connected.Set(1)
	t.connected.Store(true)
	defer func() { t.metrics.Connected.Set(0); t.connected.Store(false) }()
	connected()

	sweep := time.NewTicker(t.cfg.SweepInterval)
	defer sweep.Stop()
	windowStart, received := time.Now(), 0
	var early <-chan time.Time // a sweep sooner than the next tick
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f, ok := <-frames:
			if !ok {
				select {
				case err := <-readErr:
					return err
				default:
					return ctx.Err()
				}
			}
			if len(f.DroppedEntries) > 0 {
				// Re-read the dropped span first, through the frame's own
				// entries; the frame's entries then come again and are
				// dropped as repeats.
				if err := t.recoverDropped(ctx, h, &f, out); err != nil {
					return err
				}
			}
			n, err := t.deliver(ctx, f.Streams, fromTail, out)
			if err != nil {
				return err
			}
			received += n
			// A frame at Loki's cap or a backlog of frames means the tail
			// runs at its limit, where Loki drops without saying: sweep
			// as soon as the troubled entries can be in query_range.
			if early == nil && !t.cfg.NoSweep && (frameEntries(f) >= maxFrameEntries || len(frames) > cap(frames)/2) {
				early = time.After(t.cfg.SweepDelay)
			}
		case <-early:
			early = nil
			received += t.sweep(ctx, h, out)
		case now := <-sweep.C:
			if !t.cfg.NoSweep {
				// What the sweeper finds counts toward the rate too: a
				// tail that loses most entries carries few.
				received += t.sweep(ctx, h, out)
			}
			if elapsed := now.Sub(windowStart); elapsed >= rateWindow {
				rate := float64(received) / elapsed.Seconds()
				windowStart, received = now, 0
				if !t.cfg.NoSweep && rate > float64(t.cfg.TailMaxRate) {
					t.log.Warn("more entries than a loki tail carries; reading by polling query_range alone", "rate_per_s", int(rate), "tail_max_rate", t.cfg.TailMaxRate)
					t.polling.Store(true)
					t.metrics.Polling.Set(1)
					return errSwitch
				}
			}
		}
	}
}

// maxFrameEntries is the most entries Loki puts in one tail frame
// (LOKI-FACTS.md).
const maxFrameEntries = 100

func frameEntries(f frame) int {
	n := 0
	for _, s := range f.Streams {
		n += len(s.Values)
	}
	return n
}

// sweep re-reads, with query_range, what reached Loki since the last sweep
// and delivers what the tail missed; it returns how many. A failed sweep is retried from the
// same place at the next tick; the lag metric shows how far behind it is.
func (t *Tail) sweep(ctx context.Context, h http.Header, out chan<- detector.Event) int {
	until := time.Now().Add(-t.cfg.SweepDelay).UnixNano()
	from := t.dedup.start(t.sweptUntil.Load())
	if until <= from {
		return 0
	}
	n, err := t.catchUp(ctx, h, from, until, fromSweep, out)
	if err != nil {
		if ctx.Err() == nil {
			t.metrics.Sweeps.WithLabelValues("failure").Inc()
			t.recovered.warn("loki sweep failed; retrying at the next one", "err", err.Error())
		}
		t.advance(0)
		return n
	}
	t.metrics.Sweeps.WithLabelValues("success").Inc()
	t.advance(until)
	if n > 0 {
		t.metrics.Recovered.Add(float64(n))
		t.recovered.warn("the live tail missed entries; the sweeper read them with query_range", "entries", n)
	}
	return n
}

// poll reads by query_range alone, every SweepInterval, while the rate is
// more than a tail carries. Each poll reads from SweepDelay behind the last
// one (entries arrive a little after their timestamps) to past now.
func (t *Tail) poll(ctx context.Context, out chan<- detector.Event, connected func()) error {
	defer func() {
		if !t.polling.Load() {
			t.metrics.Polling.Set(0)
		}
	}()
	h, err := t.header()
	if err != nil {
		return err
	}
	tick := time.NewTicker(t.cfg.SweepInterval)
	defer tick.Stop()
	windowStart, read := time.Now(), 0
	calmSince := time.Time{}
	for {
		at := time.Now()
		n, err := t.catchUp(ctx, h, t.dedup.start(t.sweptUntil.Load()), at.Add(futureGrace).UnixNano(), fromSweep, out)
		if err != nil {
			t.metrics.Sweeps.WithLabelValues("failure").Inc()
			return err
		}
		t.metrics.Sweeps.WithLabelValues("success").Inc()
		t.advance(at.Add(-t.cfg.SweepDelay).UnixNano())
		connected()
		read += n
		if elapsed := at.Sub(windowStart); elapsed >= rateWindow {
			rate := float64(read) / elapsed.Seconds()
			windowStart, read = at, 0
			switch {
			case rate >= float64(t.cfg.TailMaxRate)/2:
				calmSince = time.Time{}
			case calmSince.IsZero():
				calmSince = at
			case at.Sub(calmSince) >= tailAgainCalm:
				t.log.Info("the rate is down to what a loki tail carries; tailing again", "rate_per_s", int(rate))
				t.polling.Store(false)
				return errSwitch
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// recoverDropped re-reads, with query_range, the span of entries Loki
// dropped for this tail.
func (t *Tail) recoverDropped(ctx context.Context, h http.Header, f *frame, out chan<- detector.Event) error {
	lo, hi := int64(0), int64(0)
	for _, s := range f.Streams {
		for _, v := range s.Values {
			if ts, err := strconv.ParseInt(v[0], 10, 64); err == nil {
				if lo == 0 || ts < lo {
					lo = ts
				}
				hi = max(hi, ts)
			}
		}
	}
	for _, d := range f.DroppedEntries {
		ts, err := strconv.ParseInt(d.Timestamp, 10, 64)
		if err != nil {
			continue
		}
		if lo == 0 || ts < lo {
			lo = ts
		}
		hi = max(hi, ts)
	}
	t.metrics.Dropped.Add(float64(len(f.DroppedEntries)))
	t.log.Warn("loki dropped entries for this tail; re-reading them", "count", len(f.DroppedEntries))
	if lo == 0 {
		return nil
	}
	// Loki lists at most 1,000 dropped entries a frame: the span may be
	// wider than what it names, so the sweeper's mark is not moved, and
	// the next sweep reads the rest.
	_, err := t.catchUp(ctx, h, t.dedup.start(lo), hi+1, fromSweep, out)
	return err
}

// catchUp delivers every entry in [from, until) with query_range, oldest
// first, a page at a time, and returns how many were new. Each page starts
// at the last timestamp of the one before (start is inclusive), so entries
// sharing that nanosecond are read again and dropped as repeats rather than
// skipped.
func (t *Tail) catchUp(ctx context.Context, h http.Header, from, until int64, src source, out chan<- detector.Event) (int, error) {
	delivered := 0
	for from < until {
		q := url.Values{"query": {t.query.Remote}, "start": {strconv.FormatInt(from, 10)}, "end": {strconv.FormatInt(until, 10)},
			"limit": {strconv.Itoa(t.cfg.PageLimit)}, "direction": {"forward"}}
		body, err := t.queryRange(ctx, h, q, "catch-up query")
		if err != nil {
			return delivered, err
		}
		status, result, err := decodeQueryResult(body)
		if err != nil || status != "success" {
			return delivered, fmt.Errorf("catch up from %s: undecodable answer (status %q): %v", t.cfg.URL, status, err)
		}
		t.metrics.CatchUpPages.Inc()
		n, last := 0, from
		for _, s := range result {
			n += len(s.Values)
			for _, v := range s.Values {
				if ts, err := strconv.ParseInt(v[0], 10, 64); err == nil && ts > last {
					last = ts
				}
			}
		}
		k, err := t.deliver(ctx, result, src, out)
		delivered += k
		if err != nil {
			return delivered, err
		}
		if n < t.cfg.PageLimit {
			return delivered, nil
		}
		if last == from {
			// A whole page at one nanosecond: more than PageLimit entries
			// share it, and paging cannot get past them.
			t.log.Error("more entries at one timestamp than a query page holds; some may be missed", "ts", from, "page_limit", t.cfg.PageLimit)
			last++
		}
		from = last
	}
	return delivered, nil
}

// queryRange asks Loki's query_range with the headers h and returns the
// answer's body; what names the query in errors.
func (t *Tail) queryRange(ctx context.Context, h http.Header, q url.Values, what string) ([]byte, error) {
	target, err := t.endpoint("/loki/api/v1/query_range", q, false)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header = h.Clone()
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", what, t.cfg.URL, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", what, t.cfg.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, t.refusal(what, resp.StatusCode, string(body))
	}
	return body, nil
}

// maxSeriesMinutes bounds AttemptsPerMinute's series.
const maxSeriesMinutes = 60

// AttemptsPerMinute counts the source's events (the query's lines) from
// key, an address, or from all clients for "", minute by minute: bucket i
// holds those in the minute ending at the i-th minute boundary at or after
// from, the last bucket the one holding to; at most the last hour. Loki
// answers it as sum(count_over_time(QUERY | client_ip="KEY" [1m])) with a
// one-minute step. Keys that are prefixes are not counted.
func (t *Tail) AttemptsPerMinute(ctx context.Context, key string, from, to time.Time) ([]int, error) {
	query := t.query.Full
	if key != "" {
		if !t.query.parses() {
			query += " | json"
		}
		addr, err := netip.ParseAddr(key)
		if err != nil {
			return nil, fmt.Errorf("attempts per minute: %q is not a single address", key)
		}
		query += " | " + t.parser.fields.ClientIP + `="` + addr.String() + `"`
	}
	ceil := func(x time.Time) time.Time {
		if m := x.Truncate(time.Minute); !m.Equal(x) {
			return m.Add(time.Minute)
		}
		return x
	}
	first, last := ceil(from), ceil(to)
	if last.Sub(first) >= maxSeriesMinutes*time.Minute {
		first = last.Add(-(maxSeriesMinutes - 1) * time.Minute)
	}
	h, err := t.header()
	if err != nil {
		return nil, err
	}
	q := url.Values{"query": {"sum(count_over_time(" + query + " [1m]))"}, "start": {strconv.FormatInt(first.UnixNano(), 10)},
		"end": {strconv.FormatInt(last.UnixNano(), 10)}, "step": {"60"}}
	body, err := t.queryRange(ctx, h, q, "attempts-per-minute query")
	if err != nil {
		return nil, err
	}
	var answer struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Status != "success" {
		return nil, fmt.Errorf("attempts per minute from %s: undecodable answer (status %q): %v", t.cfg.URL, answer.Status, err)
	}
	series := make([]int, int(last.Sub(first)/time.Minute)+1)
	for _, r := range answer.Data.Result {
		for _, v := range r.Values {
			var at float64
			var n string
			if json.Unmarshal(v[0], &at) != nil || json.Unmarshal(v[1], &n) != nil {
				continue
			}
			i := int(math.Round((at - float64(first.Unix())) / 60))
			count, err := strconv.Atoi(n)
			if err == nil && i >= 0 && i < len(series) {
				series[i] += count
			}
		}
	}
	return series, nil
}

type tsLine struct {
	ts     int64
	line   string
	labels map[string]string
}

// mergeEntries flattens streams into one time-ordered list (stable, so a
// stream's own order is kept among equal timestamps). Entries with a bad
// timestamp are skipped and, with a skipLog, counted.
func mergeEntries(streams []wireStream, skips *skipLog) []tsLine {
	n := 0
	for _, s := range streams {
		n += len(s.Values)
	}
	entries := make([]tsLine, 0, n)
	for _, s := range streams {
		for _, v := range s.Values {
			ts, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil {
				if skips != nil {
					skips.skip(&SkipError{SkipBadTime, "entry timestamp " + clip.String(v[0], 32)}, v[1])
				}
				continue
			}
			entries = append(entries, tsLine{ts, v[1], s.Stream})
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].ts < entries[j].ts })
	return entries
}

// deliver merges streams into time order (Loki groups entries per stream,
// and each distinct label set is its own stream), drops repeats, checks the
// query's own stages, parses and sends the rest; it returns how many
// entries were new. Entries not read live are marked as caught up.
func (t *Tail) deliver(ctx context.Context, streams []wireStream, src source, out chan<- detector.Event) (int, error) {
	fresh := 0
	now := time.Now()
	for _, e := range mergeEntries(streams, &t.skips) {
		if !t.dedup.first(e.ts, e.line, e.ts) {
			t.metrics.Duplicates.Inc()
			continue
		}
		fresh++
		if e.ts > t.newest {
			t.newest = e.ts
		}
		if src != fromCatchUp || t.sweptUntil.Load() > now.Add(-t.cfg.MaxLag).UnixNano() {
			t.metrics.ReadDelay.Observe(now.Sub(time.Unix(0, e.ts)).Seconds())
		}
		if !t.query.Keep(e.labels, e.line) {
			t.metrics.Filtered.Inc()
			continue
		}
		ev, err := t.parser.Parse(time.Unix(0, e.ts).UTC(), e.line)
		if err != nil {
			t.skips.skip(err, e.line)
			continue
		}
		ev.CatchUp = src != fromTail
		t.metrics.Lines.Inc()
		select {
		case out <- ev:
		case <-ctx.Done():
			return fresh, ctx.Err()
		}
	}
	if t.newest > 0 {
		t.metrics.Lag.Set(time.Since(time.Unix(0, t.newest)).Seconds())
	}
	return fresh, nil
}

// rateLog logs a warning at most every `every`, so a condition that goes
// on does not flood the log.
type rateLog struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

func (l *rateLog) warn(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < l.every {
		l.mu.Unlock()
		return
	}
	l.last = now
	l.mu.Unlock()
	l.log.Warn(msg, args...)
}

// skipLog counts skipped lines and logs a sample of them at most every 10 s
// per reason, so a flood of bad lines cannot flood the log.
type skipLog struct {
	log     *slog.Logger
	metrics *Metrics
	sampled sync.Map // reason -> time of the last sample logged
}

func (l *skipLog) skip(err error, line string) {
	reason := "unknown"
	if se, ok := IsSkip(err); ok {
		reason = se.Reason
	}
	l.metrics.Skipped.WithLabelValues(reason).Inc()
	now := time.Now()
	if last, ok := l.sampled.Load(reason); ok && now.Sub(last.(time.Time)) < 10*time.Second {
		return
	}
	l.sampled.Store(reason, now)
	l.log.Warn("skipped log line", "reason", reason, "err", err.Error(), "sample", clip.String(line, 256))
}

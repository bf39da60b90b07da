package loki

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/backoff"
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
	stage   *stage
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
	st := newStage(p, log, m)
	st.keep = q.Keep
	return &Tail{cfg: cfg, query: q, stage: st, log: log, metrics: m,
		dialer:    &websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: cfg.TLS, Proxy: http.ProxyFromEnvironment},
		client:    &http.Client{Transport: tr, Timeout: time.Minute},
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

// Run delivers events to out until ctx ends, beginning Backfill ago. It
// returns only ctx's error.
func (t *Tail) Run(ctx context.Context, out chan<- detector.Event) error {
	return t.RunFrom(ctx, t.From(time.Now()), out)
}

// From is where a Run begun at now first reads from: Backfill before it.
func (t *Tail) From(now time.Time) time.Time { return now.Add(-t.cfg.Backfill) }

// RunFrom is Run with its first catch-up reading from from: a caller that
// counts what came before from by other means (a checkpoint) says where
// its count ends.
func (t *Tail) RunFrom(ctx context.Context, from time.Time, out chan<- detector.Event) error {
	t.sweptUntil.Store(from.UnixNano())
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
	return t.stage.dedup.start(t.sweptUntil.Load() - int64(t.cfg.DedupWindow))
}

// advance moves the sweeper's mark to until (never back), forgets the
// entries no read reaches again, and publishes the lag.
func (t *Tail) advance(until int64) {
	if until > t.sweptUntil.Load() {
		t.sweptUntil.Store(until)
		t.stage.dedup.forget(until - int64(t.cfg.DedupWindow))
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
	conn, err := t.dial(ctx, h)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// Frames are read while the catch-up and sweeps run, so Loki does not
	// drop entries for a slow client meanwhile.
	frames := make(chan frame, 256)
	readErr := make(chan error, 1)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go t.readFrames(readCtx, conn, frames, readErr)

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
	return t.follow(ctx, h, frames, readErr, out)
}

// tailIdle is how long a tail may stay silent before it is taken for
// dead: Loki pings every second.
const tailIdle = 30 * time.Second

// dial opens a tail that starts now (the catch-up covers everything
// before; entries in both are delivered once).
func (t *Tail) dial(ctx context.Context, h http.Header) (*websocket.Conn, error) {
	q := url.Values{"query": {t.query.Remote}, "start": {strconv.FormatInt(time.Now().UnixNano(), 10)}}
	if t.cfg.DelayFor > 0 {
		q.Set("delay_for", strconv.Itoa(t.cfg.DelayFor))
	}
	target, err := t.endpoint("/loki/api/v1/tail", q, true)
	if err != nil {
		return nil, err
	}
	conn, resp, err := t.dialer.DialContext(ctx, target, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			return nil, t.refusal("tail", resp.StatusCode, string(body))
		}
		return nil, fmt.Errorf("tail %s: %w", t.cfg.URL, err)
	}
	conn.SetReadLimit(64 << 20)
	conn.SetReadDeadline(time.Now().Add(tailIdle))
	conn.SetPingHandler(func(data string) error {
		conn.SetReadDeadline(time.Now().Add(tailIdle))
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	return conn, nil
}

// readFrames decodes the tail's frames into frames until the tail ends,
// closing it then; why it ended goes to readErr (nothing when ctx ended).
func (t *Tail) readFrames(ctx context.Context, conn *websocket.Conn, frames chan<- frame, readErr chan<- error) {
	defer close(frames)
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case ctx.Err() != nil:
			case errors.As(err, &ce) && strings.Contains(ce.Text, "max concurrent tail requests"):
				readErr <- fmt.Errorf("%w: %s", errTooManyTails, ce.Text)
			case errors.As(err, &ce):
				readErr <- fmt.Errorf("loki closed the tail: %d %s", ce.Code, ce.Text)
			default:
				readErr <- fmt.Errorf("tail %s: %w", t.cfg.URL, err)
			}
			return
		}
		conn.SetReadDeadline(time.Now().Add(tailIdle))
		f, err := decodeFrame(msg)
		if err != nil {
			readErr <- fmt.Errorf("tail %s: undecodable frame: %w", t.cfg.URL, err)
			return
		}
		select {
		case frames <- f:
		case <-ctx.Done():
			return
		}
	}
}

// follow delivers the tail's frames, re-reads what Loki says it dropped,
// runs the sweeper behind the tail, and returns errSwitch when more comes
// than a tail carries.
func (t *Tail) follow(ctx context.Context, h http.Header, frames <-chan frame, readErr <-chan error, out chan<- detector.Event) error {
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
				if t.tooFast(received, elapsed) {
					return errSwitch
				}
				windowStart, received = now, 0
			}
		}
	}
}

// tooFast says whether received entries in elapsed are more than a tail
// carries, and if so switches the reader to polling.
func (t *Tail) tooFast(received int, elapsed time.Duration) bool {
	rate := float64(received) / elapsed.Seconds()
	if t.cfg.NoSweep || rate <= float64(t.cfg.TailMaxRate) {
		return false
	}
	t.log.Warn("more entries than a loki tail carries; reading by polling query_range alone", "rate_per_s", int(rate), "tail_max_rate", t.cfg.TailMaxRate)
	t.polling.Store(true)
	t.metrics.Polling.Set(1)
	return true
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

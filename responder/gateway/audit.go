package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/responder/backoff"
)

// AuditEvent is one audit line, in the contract of DESIGN.md.
type AuditEvent struct {
	TS        string `json:"ts"`
	Service   string `json:"service"`
	Action    string `json:"action"`
	ClientIP  string `json:"client_ip"`
	Username  string `json:"username,omitempty"`
	Path      string `json:"path"`
	Status    int    `json:"status"`
	UserAgent string `json:"user_agent,omitempty"`
	// RequestID tells one attempt from another: five wrong passwords in
	// one instant are five lines, never one line five times (Loki keeps an
	// exact repeat once).
	RequestID string `json:"request_id"`
	// Sig signs the fields above with the gateway's audit key, when it
	// has one (package auditsig).
	Sig string `json:"sig,omitempty"`
}

// Sink receives audit lines.
type Sink interface {
	Audit(at time.Time, line []byte)
}

// WriterSink writes each line to w followed by a newline.
type WriterSink struct {
	mu sync.Mutex
	W  io.Writer
}

// Audit implements Sink.
func (s *WriterSink) Audit(_ time.Time, line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.W.Write(append(line, '\n'))
}

// PusherOptions configure a LokiPusher.
type PusherOptions struct {
	// URL is the push endpoint's base, e.g. http://loki:3100 (the path
	// /loki/api/v1/push is added).
	URL string
	// Header sets the tenant, credentials and extra headers of each push
	// (nil: none); it may read files, so a rotated token is picked up.
	Header func(http.Header) error
	// TLS configures an https URL (custom CA, client certificate).
	TLS *tls.Config
	// Labels of the stream; service="audit" is always set.
	Labels map[string]string
	// Queue bounds lines waiting to be pushed (default 10000); when full the
	// oldest line is dropped and counted.
	Queue int
	// Batch is the most lines in one push (default 500); FlushEvery is the
	// longest a line waits (default 200ms).
	Batch      int
	FlushEvery time.Duration
	Log        *slog.Logger
	Registry   prometheus.Registerer
}

// LokiPusher pushes audit lines to Loki (or authguard's push receiver) in
// snappy-compressed protobuf batches, retrying with backoff.
type LokiPusher struct {
	opts    PusherOptions
	labels  string
	client  *http.Client
	mu      sync.Mutex
	queue   []push.Entry
	removed uint64 // entries ever taken off the queue's head
	wake    chan struct{}
	pushed  prometheus.Counter
	dropped prometheus.Counter
	errors  prometheus.Counter
}

// NewPusher returns a pusher; Run sends.
func NewPusher(opts PusherOptions) (*LokiPusher, error) {
	if _, err := url.Parse(opts.URL); err != nil || opts.URL == "" {
		return nil, fmt.Errorf("loki push url %q: want e.g. http://loki:3100", opts.URL)
	}
	if opts.Queue <= 0 {
		opts.Queue = 10000
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 200 * time.Millisecond
	}
	labels := map[string]string{}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	labels["service"] = "audit"
	p := &LokiPusher{opts: opts, labels: promLabels(labels), client: &http.Client{Timeout: 10 * time.Second, Transport: transport(opts.TLS)}, wake: make(chan struct{}, 1)}
	p.pushed = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_gateway_audit_lines_pushed_total", Help: "Audit lines pushed to Loki."})
	p.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_gateway_audit_lines_dropped_total", Help: "Audit lines dropped because the push queue was full."})
	p.errors = prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_gateway_audit_push_errors_total", Help: "Failed pushes to Loki (each is retried)."})
	if opts.Registry != nil {
		opts.Registry.MustRegister(p.pushed, p.dropped, p.errors)
	}
	return p, nil
}

// transport is the default transport with conf's TLS settings.
func transport(conf *tls.Config) http.RoundTripper {
	if conf == nil {
		return http.DefaultTransport
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = conf
	return t
}

func promLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Audit implements Sink: it queues the line.
func (p *LokiPusher) Audit(at time.Time, line []byte) {
	p.mu.Lock()
	if len(p.queue) >= p.opts.Queue {
		p.queue = p.queue[1:]
		p.removed++
		p.dropped.Inc()
	}
	p.queue = append(p.queue, push.Entry{Timestamp: at, Line: string(line)})
	full := len(p.queue) >= p.opts.Batch
	p.mu.Unlock()
	if full {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// Run pushes batches until ctx ends, then makes one last attempt.
func (p *LokiPusher) Run(ctx context.Context) {
	t := time.NewTicker(p.opts.FlushEvery)
	defer t.Stop()
	attempt := 0
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			p.flush(final)
			cancel()
			return
		case <-t.C:
		case <-p.wake:
		}
		for {
			n, err := p.flush(ctx)
			if err != nil {
				p.errors.Inc()
				wait := backoff.Jitter(attempt, 250*time.Millisecond, 15*time.Second)
				attempt++
				p.opts.Log.Warn("pushing audit lines to loki failed; retrying", "err", err, "retry_in", wait)
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
				break
			}
			attempt = 0
			if n < p.opts.Batch {
				break
			}
		}
	}
}

// flush pushes up to one batch; the lines leave the queue only once Loki
// has accepted them.
func (p *LokiPusher) flush(ctx context.Context) (int, error) {
	p.mu.Lock()
	n := min(len(p.queue), p.opts.Batch)
	batch := append([]push.Entry(nil), p.queue[:n]...)
	through := p.removed + uint64(n) // the batch ends at this position
	p.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	req := push.PushRequest{Streams: []push.Stream{{Labels: p.labels, Entries: batch}}}
	raw, err := req.Marshal()
	if err != nil {
		return 0, fmt.Errorf("encode push: %w", err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(p.opts.URL, "/")+"/loki/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Content-Type", "application/x-protobuf")
	if p.opts.Header != nil {
		if err := p.opts.Header(hr.Header); err != nil {
			return 0, err
		}
	}
	resp, err := p.client.Do(hr)
	if err != nil {
		return 0, fmt.Errorf("push to %s: %w", p.opts.URL, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("push to %s: %s: %s", p.opts.URL, resp.Status, strings.TrimSpace(string(body)))
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusUnauthorized, http.StatusForbidden:
			// Retried: a rate limit, or credentials being rotated.
			return 0, err
		}
		if resp.StatusCode/100 == 4 {
			// Loki will never take this batch; keep the queue moving.
			p.dropped.Add(float64(p.drop(through)))
		}
		return 0, err
	}
	p.drop(through)
	p.pushed.Add(float64(n))
	return n, nil
}

// drop takes the queue's head off up to position through; overflow may
// have taken some of those already. It returns how many it took.
func (p *LokiPusher) drop(through uint64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if through <= p.removed {
		return 0
	}
	k := min(int(through-p.removed), len(p.queue))
	p.queue = p.queue[k:]
	p.removed += uint64(k)
	return k
}

// MultiSink sends each line to every sink.
type MultiSink []Sink

// Audit implements Sink.
func (m MultiSink) Audit(at time.Time, line []byte) {
	for _, s := range m {
		s.Audit(at, line)
	}
}

func marshalAudit(ev AuditEvent) []byte {
	b, _ := json.Marshal(ev)
	return b
}

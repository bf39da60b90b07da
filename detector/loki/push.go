package loki

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/clip"
)

// PushedStream is one stream of a push request.
type PushedStream struct {
	Labels  map[string]string
	Entries []PushedEntry
}

// PushedEntry is one line of a pushed stream.
type PushedEntry struct {
	TS   int64 // Unix nanoseconds
	Line string
}

// PushError is a push request Loki would refuse with 400; its message is
// the one Loki gives.
type PushError struct{ Msg string }

func (e *PushError) Error() string { return e.Msg }

// ErrTooLarge is a push whose decoded body would exceed the bound.
var ErrTooLarge = errors.New("push body too large")

// DecodePush decodes a push request body the way Loki's push API does:
// JSON when the content type says so (in any case, with parameters),
// otherwise snappy-compressed protobuf (github.com/grafana/loki/pkg/push);
// a gzip or deflate Content-Encoding is undone first. The decoded body may
// be at most maxDecoded bytes: snappy's own claim of its length is checked
// before anything is allocated, and gzip is read no further than the
// bound, so a small body that claims or expands to gigabytes costs nothing
// (errors.Is(err, ErrTooLarge)).
func DecodePush(contentType, contentEncoding string, body []byte, maxDecoded int) ([]PushedStream, error) {
	body, err := decodeContent(contentEncoding, body, maxDecoded)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "application/json" {
		return decodeJSONPush(body)
	}
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return nil, &PushError{"snappy: corrupt input"}
	}
	if n > maxDecoded {
		return nil, fmt.Errorf("%w: snappy claims %d bytes decoded, over %d", ErrTooLarge, n, maxDecoded)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, &PushError{"snappy: corrupt input"}
	}
	var req push.PushRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, &PushError{"proto: " + err.Error()}
	}
	out := make([]PushedStream, 0, len(req.Streams))
	for _, st := range req.Streams {
		labels, err := ParseLabels(st.Labels)
		if err != nil {
			return nil, &PushError{err.Error()}
		}
		ps := PushedStream{Labels: labels, Entries: make([]PushedEntry, 0, len(st.Entries))}
		for _, e := range st.Entries {
			ps.Entries = append(ps.Entries, PushedEntry{e.Timestamp.UnixNano(), e.Line})
		}
		out = append(out, ps)
	}
	return out, nil
}

// decodeContent undoes a gzip or deflate Content-Encoding, reading at most
// max bytes of its output. It measures the output first, without keeping
// it, so a bomb costs no memory; a body within the bound is then decoded
// into one buffer of its size.
func decodeContent(encoding string, body []byte, max int) ([]byte, error) {
	open := func() (io.Reader, error) {
		switch strings.ToLower(strings.TrimSpace(encoding)) {
		case "gzip":
			z, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, &PushError{"gzip: " + err.Error()}
			}
			return z, nil
		case "deflate":
			return flate.NewReader(bytes.NewReader(body)), nil
		}
		return nil, &PushError{"unsupported Content-Encoding " + clip.String(encoding, 40)}
	}
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return body, nil
	}
	r, err := open()
	if err != nil {
		return nil, err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, &PushError{encoding + ": " + err.Error()}
	}
	if n > int64(max) {
		return nil, fmt.Errorf("%w: %s body expands past %d bytes", ErrTooLarge, encoding, max)
	}
	if r, err = open(); err != nil {
		return nil, err
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, &PushError{encoding + ": " + err.Error()}
	}
	return out, nil
}

func decodeJSONPush(body []byte) ([]PushedStream, error) {
	var req struct {
		Streams []struct {
			Stream map[string]string   `json:"stream"`
			Values [][]json.RawMessage `json:"values"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		ctx := string(body[:min(len(body), 10)])
		found := "EOF"
		if len(body) > 0 {
			found = string(body[:1])
		}
		return nil, &PushError{fmt.Sprintf("loghttp.PushRequest.readFieldHash: expect \", but found %s, error found in #1 byte of ...|%s|..., bigger context ...|%s|...", found, ctx, ctx)}
	}
	out := make([]PushedStream, 0, len(req.Streams))
	for _, st := range req.Streams {
		ps := PushedStream{Labels: st.Stream, Entries: make([]PushedEntry, 0, len(st.Values))}
		for _, v := range st.Values {
			var tsText, line string
			if len(v) < 2 || json.Unmarshal(v[0], &tsText) != nil || json.Unmarshal(v[1], &line) != nil {
				return nil, &PushError{"loghttp.PushRequest: a value is not [\"<ns>\", \"<line>\"]"}
			}
			ts, err := strconv.ParseInt(tsText, 10, 64)
			if err != nil {
				return nil, &PushError{fmt.Sprintf("loghttp.PushRequest: bad timestamp %q", clip.String(tsText, 40))}
			}
			ps.Entries = append(ps.Entries, PushedEntry{ts, line})
		}
		out = append(out, ps)
	}
	return out, nil
}

// ParseLabels reads a label set in Prometheus text form: {a="1", b="2"}.
func ParseLabels(s string) (map[string]string, error) {
	bad := fmt.Errorf("labels %q: want {name=\"value\", ...}", clip.String(s, 200))
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, bad
	}
	s = strings.TrimSpace(s[1 : len(s)-1])
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, bad
		}
		name := strings.TrimSpace(s[:eq])
		rest := strings.TrimSpace(s[eq+1:])
		if !strings.HasPrefix(rest, `"`) {
			return nil, bad
		}
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return nil, bad
		}
		v, err := strconv.Unquote(rest[:end+1])
		if err != nil {
			return nil, bad
		}
		out[name] = v
		s = strings.TrimSpace(rest[end+1:])
		if s != "" {
			if s[0] != ',' {
				return nil, bad
			}
			s = strings.TrimSpace(s[1:])
		}
	}
	return out, nil
}

// Receiver is a Loki-compatible push endpoint (POST /loki/api/v1/push), so
// that Promtail, Alloy, Vector or the gateway can send audit lines straight
// to authguard. Lines become events like tailed ones; labels are ignored.
type Receiver struct {
	stage    *stage // pushers retry; a retried batch is counted once
	out      chan<- detector.Event
	maxBytes int64
	pushes   *prometheus.CounterVec
	delay    prometheus.Histogram // entry timestamp to receipt, new entries

	// Authorize, when set, must accept a push before its body is read;
	// refused pushes get 401.
	Authorize func(*http.Request) bool
}

// NewReceiver returns a receiver sending events to out. Bodies over
// maxBytes are refused with 413.
func NewReceiver(p *Parser, out chan<- detector.Event, maxBytes int64, log *slog.Logger, m *Metrics, reg prometheus.Registerer) *Receiver {
	r := &Receiver{stage: newStage(p, log, m), out: out, maxBytes: maxBytes,
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_push_requests_total", Help: "Push requests received, by HTTP status answered."}, []string{"code"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authguard_push_delay_seconds",
			Help: "Time from a pushed entry's timestamp to its receipt (the pusher's clock against this one's; an entry stamped ahead counts as 0), repeats not counted.", Buckets: delayBuckets})}
	reg.MustRegister(r.pushes, r.delay)
	return r
}

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	code := r.serve(w, req)
	r.pushes.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) int {
	if r.Authorize != nil && !r.Authorize(req) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="authguard push"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return http.StatusUnauthorized
	}
	body, err := readBody(http.MaxBytesReader(w, req.Body, r.maxBytes), req.ContentLength, r.maxBytes)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("request body too large: limit %d bytes", r.maxBytes), http.StatusRequestEntityTooLarge)
			return http.StatusRequestEntityTooLarge
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
		return http.StatusBadRequest
	}
	streams, err := DecodePush(req.Header.Get("Content-Type"), req.Header.Get("Content-Encoding"), body, int(r.maxBytes))
	if errors.Is(err, ErrTooLarge) {
		http.Error(w, fmt.Sprintf("request body too large: %v", err), http.StatusRequestEntityTooLarge)
		return http.StatusRequestEntityTooLarge
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return http.StatusBadRequest
	}
	if err := r.accept(req.Context(), streams); err != nil {
		http.Error(w, "authguard is shutting down", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// readBody reads a request body into one buffer sized by its declared
// length (within max), instead of doubling a buffer up to it.
func readBody(body io.Reader, declared, max int64) ([]byte, error) {
	size := int64(512)
	if declared > 0 {
		size = min(declared, max) + bytes.MinRead // ReadFrom grows below MinRead free
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	_, err := buf.ReadFrom(body)
	return buf.Bytes(), err
}

// receiverMemory is how long the receiver remembers a pushed entry after
// it arrived, so that a pusher's retry is counted once.
const receiverMemory = 10 * time.Minute

func (r *Receiver) accept(ctx context.Context, streams []PushedStream) error {
	now := time.Now().UnixNano()
	r.stage.mu.Lock()
	r.stage.dedup.forget(now - int64(receiverMemory))
	r.stage.mu.Unlock()
	for _, st := range streams {
		for _, e := range st.Entries {
			fresh, err := r.stage.pass(ctx, tsLine{ts: e.TS, line: e.Line}, now, false, r.out)
			if err != nil {
				return err
			}
			if fresh {
				r.delay.Observe(max(0, float64(now-e.TS)/1e9))
			}
		}
	}
	return nil
}

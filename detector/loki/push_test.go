package loki

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/authguard/authguard/detector"
)

func newReceiver(maxBytes int64) (*Receiver, *Metrics, chan detector.Event) {
	out := make(chan detector.Event, 100)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	r := NewReceiver(NewParser(DefaultFields, 0, 0, false), out, maxBytes, slog.New(slog.NewTextHandler(io.Discard, nil)), m, reg)
	return r, m, out
}

func post(r http.Handler, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/loki/api/v1/push", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

func TestReceiverTakesProtobufAndJSONPushes(t *testing.T) {
	r, m, out := newReceiver(1 << 20)
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	req := push.PushRequest{Streams: []push.Stream{{Labels: `{service="audit", pod="gw-1"}`, Entries: []push.Entry{
		{Timestamp: at, Line: `{"action":"auth_failed","client_ip":"203.0.113.7","username":"alice"}`},
		{Timestamp: at.Add(1), Line: `not json`},
	}}}}
	raw, _ := req.Marshal()
	if w := post(r, "application/x-protobuf", snappy.Encode(nil, raw)); w.Code != 204 {
		t.Fatalf("protobuf push: %d %s", w.Code, w.Body)
	}
	// A retried push (same lines) is counted once.
	if w := post(r, "application/x-protobuf", snappy.Encode(nil, raw)); w.Code != 204 {
		t.Fatalf("retried push: %d", w.Code)
	}
	body := `{"streams":[{"stream":{"service":"audit"},"values":[["` + "1795000000000000000" + `","{\"action\":\"auth_failed\",\"client_ip\":\"2001:db8::1\"}"]]}]}`
	if w := post(r, "application/json", []byte(body)); w.Code != 204 {
		t.Fatalf("json push: %d %s", w.Code, w.Body)
	}
	got := []string{(<-out).IP.String(), (<-out).IP.String()}
	if got[0] != "203.0.113.7" || got[1] != "2001:db8::1" || len(out) != 0 {
		t.Errorf("events %v (+%d more)", got, len(out))
	}
	if testutil.ToFloat64(m.Skipped.WithLabelValues(SkipNotJSON)) != 1 || testutil.ToFloat64(m.Duplicates) != 2 {
		t.Errorf("skipped %v duplicates %v", testutil.ToFloat64(m.Skipped.WithLabelValues(SkipNotJSON)), testutil.ToFloat64(m.Duplicates))
	}
}

func TestReceiverRefusesBadPushesLikeLoki(t *testing.T) {
	r, _, _ := newReceiver(1024)
	for _, tt := range []struct {
		name, ct, body string
		code           int
		msg            string
	}{
		{"malformed JSON", "application/json", "nonsense", 400, "loghttp.PushRequest.readFieldHash: expect \", but found n"},
		{"corrupt snappy", "application/x-protobuf", "garbage", 400, "snappy: corrupt input"},
		{"a body over the limit", "application/json", strings.Repeat("x", 2000), 413, "request body too large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := post(r, tt.ct, []byte(tt.body))
			if w.Code != tt.code || !strings.HasPrefix(w.Body.String(), tt.msg) {
				t.Errorf("%d %q, want %d %q", w.Code, w.Body, tt.code, tt.msg)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels(`{service="audit", msg="a \"quoted\", comma"}`)
	if err != nil || got["service"] != "audit" || got["msg"] != `a "quoted", comma` {
		t.Errorf("%v %v", got, err)
	}
	for _, bad := range []string{`service="audit"`, `{service=audit}`, `{service="audit"`, `{="x"}`} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// Bodies that claim or expand to far more than --push-max-bytes are
// refused with 413 before anything of that size is allocated.
func TestDecompressionBombsAreRefusedBeforeTheyAllocate(t *testing.T) {
	r, _, out := newReceiver(10 << 20)
	// Snappy's header claims 4 GiB; 9 bytes in all.
	claim := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0}
	bomb := snappy.Encode(nil, make([]byte, 60<<20)) // 60 MiB of zeros, about 2.9 MB
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(make([]byte, 60<<20))
	zw.Close()
	for _, tt := range []struct {
		name, contentType, encoding string
		body                        []byte
	}{
		{"a 9-byte snappy body claiming 4 GiB", "application/x-protobuf", "", claim},
		{fmt.Sprintf("a %d-byte snappy body of 60 MiB", len(bomb)), "application/x-protobuf", "", bomb},
		{fmt.Sprintf("a %d-byte gzip body of 60 MiB", gz.Len()), "application/json", "gzip", gz.Bytes()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			req := httptest.NewRequest("POST", "/loki/api/v1/push", bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.contentType)
			req.Header.Set("Content-Encoding", tt.encoding)
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			runtime.ReadMemStats(&after)
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("answered %d %s, want 413", w.Code, w.Body)
			}
			// The body itself and at most the bound are read.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > uint64(len(tt.body))+12<<20 {
				t.Errorf("allocated %d MiB for it", grew>>20)
			}
		})
	}
	if len(out) != 0 {
		t.Errorf("%d events from refused bodies", len(out))
	}
}

// Content-Type is read as Loki reads it: any case, with parameters; and a
// gzip body under the bound is taken.
func TestPushContentTypesAndEncodingsLikeLoki(t *testing.T) {
	r, _, out := newReceiver(1 << 20)
	body := `{"streams":[{"stream":{"service":"audit"},"values":[["1795000000000000000","{\"action\":\"auth_failed\",\"client_ip\":\"192.0.2.1\"}"]]}]}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(body))
	zw.Close()
	for _, tt := range []struct {
		contentType, encoding string
		body                  []byte
	}{
		{"Application/JSON; charset=utf-8", "", []byte(body)},
		{"application/json", "gzip", gz.Bytes()},
	} {
		req := httptest.NewRequest("POST", "/loki/api/v1/push", bytes.NewReader(tt.body))
		req.Header.Set("Content-Type", tt.contentType)
		req.Header.Set("Content-Encoding", tt.encoding)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != 204 {
			t.Errorf("%s %s: %d %s", tt.contentType, tt.encoding, w.Code, w.Body)
		}
	}
	if len(out) != 1 { // the second is a retry of the first: counted once
		t.Errorf("%d events", len(out))
	}
}

// The push delay histogram counts each new entry once, from its timestamp
// to its receipt; one stamped ahead (a pusher's clock, or a lie) counts 0.
func TestReceiverTimesPushesFromTheirTimestamps(t *testing.T) {
	r, _, out := newReceiver(1 << 20)
	now := time.Now()
	line := func(ip string) string { return `{"action":"auth_failed","client_ip":"` + ip + `"}` }
	req := push.PushRequest{Streams: []push.Stream{{Labels: `{service="audit"}`, Entries: []push.Entry{
		{Timestamp: now.Add(-3 * time.Second), Line: line("203.0.113.1")},
		{Timestamp: now.Add(time.Hour), Line: line("203.0.113.2")},
	}}}}
	raw, _ := req.Marshal()
	for range 2 { // the second is a retry: repeats are not timed again
		if w := post(r, "application/x-protobuf", snappy.Encode(nil, raw)); w.Code != 204 {
			t.Fatalf("push: %d %s", w.Code, w.Body)
		}
	}
	<-out
	<-out
	var m dto.Metric
	if err := r.delay.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); n != 2 || sum < 3 || sum > 4 {
		t.Errorf("push delay: %d entries, %.3f s in all; want 2 entries, 3 s and a little", n, sum)
	}
}

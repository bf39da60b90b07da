package loki

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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

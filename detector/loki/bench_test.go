package loki

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
)

func auditLine(i int) string {
	return fmt.Sprintf(`{"ts":"2026-11-22T10:00:%02d.%09dZ","service":"audit","action":"auth_failed","client_ip":"203.0.%d.%d","username":"user%d@example.com","path":"/auth/login","status":401,"user_agent":"python-requests/2.31"}`,
		i%60, i, (i>>8)&255, i&255, i)
}

// tailFrame builds a tail frame of n entries spread over 10 streams, as
// Loki sends them with | json (each label set its own stream).
func tailFrame(n int) []byte {
	var f frame
	base := time.Now().UnixNano()
	for s := range 10 {
		ws := wireStream{Stream: map[string]string{"service": "audit", "action": "auth_failed", "client_ip": "203.0.113." + strconv.Itoa(s)}}
		for i := s; i < n; i += 10 {
			ws.Values = append(ws.Values, [2]string{strconv.FormatInt(base+int64(i), 10), auditLine(i)})
		}
		f.Streams = append(f.Streams, ws)
	}
	b, _ := json.Marshal(f)
	return b
}

// BenchmarkTailFrameDecode decodes tail frames of 1,000 entries into
// time-ordered entries: what the tail does with every frame before parsing
// lines. Reports lines/s.
func BenchmarkTailFrameDecode(b *testing.B) {
	msg := tailFrame(1000)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	start := time.Now()
	for range b.N {
		f, err := decodeFrame(msg)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(mergeEntries(f.Streams, nil)); n != 1000 {
			b.Fatalf("%d entries", n)
		}
	}
	b.ReportMetric(float64(b.N*1000)/time.Since(start).Seconds(), "lines/s")
}

// BenchmarkPushDecode decodes snappy-compressed protobuf push requests of
// 1,000 lines, as the push receiver does. Reports lines/s.
func BenchmarkPushDecode(b *testing.B) {
	var req push.PushRequest
	base := time.Now()
	st := push.Stream{Labels: `{service="audit"}`}
	for i := range 1000 {
		st.Entries = append(st.Entries, push.Entry{Timestamp: base.Add(time.Duration(i)), Line: auditLine(i)})
	}
	req.Streams = append(req.Streams, st)
	raw, _ := req.Marshal()
	body := snappy.Encode(nil, raw)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	start := time.Now()
	for range b.N {
		streams, err := DecodePush("application/x-protobuf", "", body, 64<<20)
		if err != nil || len(streams[0].Entries) != 1000 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/time.Since(start).Seconds(), "lines/s")
}

// BenchmarkParseLine turns audit lines into events. Reports lines/s.
func BenchmarkParseLine(b *testing.B) {
	p := NewParser(DefaultFields, 0, 0, false)
	lines := make([]string, 1024)
	for i := range lines {
		lines[i] = auditLine(i)
	}
	ts := time.Now()
	b.ReportAllocs()
	start := time.Now()
	for i := range b.N {
		if _, err := p.Parse(ts, lines[i&1023]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
}

// BenchmarkPushBombRefused sends the receiver the two bombs of issue #16,
// a 9-byte snappy body whose header claims 4 GiB and a 2.9 MB one that
// expands to 60 MiB, with the default 10 MiB --push-max-bytes. Each must
// be answered 413; reports the time to answer and the bytes allocated.
func BenchmarkPushBombRefused(b *testing.B) {
	for _, bomb := range []struct {
		name string
		body []byte
	}{
		{"claims-4GiB", []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0}},
		{"expands-to-60MiB", snappy.Encode(nil, make([]byte, 60<<20))},
	} {
		b.Run(bomb.name, func(b *testing.B) {
			m := NewMetrics(prometheus.NewRegistry())
			r := NewReceiver(NewParser(DefaultFields, 0, 0, false), make(chan detector.Event, 1), 10<<20, slog.New(slog.NewTextHandler(io.Discard, nil)), m, prometheus.NewRegistry())
			b.ReportAllocs()
			var worst time.Duration
			start := time.Now()
			for range b.N {
				req := httptest.NewRequest("POST", "/loki/api/v1/push", bytes.NewReader(bomb.body))
				req.Header.Set("Content-Type", "application/x-protobuf")
				w := httptest.NewRecorder()
				t0 := time.Now()
				r.ServeHTTP(w, req)
				worst = max(worst, time.Since(t0))
				if w.Code != http.StatusRequestEntityTooLarge {
					b.Fatalf("answered %d", w.Code)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/refusal")
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
}

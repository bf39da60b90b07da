package logfile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
)

// BenchmarkReadLogcli reads logcli jsonl output, labels and all, as
// replay does, and reports lines per second.
func BenchmarkReadLogcli(b *testing.B) {
	var in strings.Builder
	const lines = 50_000
	for i := range lines {
		fmt.Fprintf(&in, `{"labels":{"service":"audit","service_name":"audit","detected_level":"unknown","action":"auth_failed","client_ip":"203.0.%d.%d"},"line":"{\"service\":\"audit\",\"action\":\"auth_failed\",\"client_ip\":\"203.0.%d.%d\",\"username\":\"user%d\",\"path\":\"/auth/login\",\"status\":401,\"user_agent\":\"Mozilla/5.0\",\"request_id\":\"%016x\"}","timestamp":"2026-11-22T10:%02d:%02d.%09dZ"}`+"\n",
			i%50, i%254+1, i%50, i%254+1, i%500, i, (i/3600)%60, (i/60)%60, i)
	}
	text := in.String()
	parse := JSON(loki.NewParser(loki.DefaultFields, 0, 0, true), loki.NewParser(loki.DefaultFields, 0, 0, false))
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		n := 0
		_, err := Stream(context.Background(), []Input{{Name: "bench", R: strings.NewReader(text)}}, Options{Parse: parse, MaxLine: 1 << 20, Window: time.Minute},
			func(*detector.Event) error { n++; return nil })
		if err != nil || n != lines {
			b.Fatalf("%d events, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.N*lines)/time.Since(start).Seconds(), "lines/s")
}

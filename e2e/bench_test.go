package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/redisblock"
)

// BenchmarkBlockWrites writes blocks through the store's pipeline (batches
// of 256, as the responder sends them under load) to a local redis-server
// and reports blocks per second.
func BenchmarkBlockWrites(b *testing.B) {
	rdb := startRedisServer(b).client()
	store := redisblock.New(rdb, redisblock.DefaultKeys, redisblock.Options{})
	ctx := context.Background()
	// The decisions are made while the clock is stopped, a batch at a
	// time (a slice of all of them would be garbage-collector work the
	// store does not do): what is measured is the store and Redis.
	batch := make([]responder.Request, 256)
	var elapsed time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		n := min(len(batch), b.N-i)
		b.StopTimer()
		now := time.Now()
		for j := range n {
			k := i + j
			batch[j] = blockRequest(fmt.Sprintf("10.%d.%d.%d", (k>>16)&255, (k>>8)&255, k&255), k, now)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := store.Write(ctx, batch[:n], time.Now()); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "blocks/s")
}

// BenchmarkDecisionToBlockVisible submits decisions to the responder one at
// a time and measures until the block is visible in Redis (its event is
// published by the same script that sets ip_block), reporting the p99.
func BenchmarkDecisionToBlockVisible(b *testing.B) {
	rdb := startRedisServer(b).client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := rdb.Subscribe(ctx, "authguard:blocks")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		b.Fatal(err)
	}
	msgs := sub.Channel()
	resp := responder.New(responder.Options{Store: redisblock.New(rdb, redisblock.DefaultKeys, redisblock.Options{}),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RunID: "bench"})
	wait := resp.Start(ctx)
	defer wait()
	defer cancel()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		req := blockRequest(fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255), i, time.Now())
		t0 := time.Now()
		resp.Submit(ctx, req.Decision, detector.Event{}, uint64(i))
		m := <-msgs
		lat = append(lat, time.Since(t0))
		var ev redisblock.Event
		if json.Unmarshal([]byte(m.Payload), &ev); ev.IP != req.Decision.Key {
			b.Fatalf("event for %s, want %s", ev.IP, req.Decision.Key)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/redisblock"
)

// BenchmarkBlockWrites submits block decisions to the responder, as the
// detector does under attack, and reports blocks per second written to a
// local redis-server through the whole pipeline: the queue, batches, the
// store's script round trips and the evidence log. `make bench` runs it
// with -cpu 1, so that on a two-core machine redis-server has a core of
// its own, as it has in production.
func BenchmarkBlockWrites(b *testing.B) {
	rdb := startRedisServer(b).client()
	store := &countingStore{Store: redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{}), want: b.N, all: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	resp := responder.New(responder.Options{Store: store, Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), RunID: "bench"})
	wait := resp.Start(ctx)
	defer wait()
	defer cancel()
	now := time.Now()
	b.ResetTimer()
	for k := range b.N {
		ip := netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
		d := detector.Decision{Time: now, Rule: "failed-login-burst", Key: ip.String(), Net: blockset.Host(ip), Kind: detector.KindBlock,
			TTL: 10 * time.Minute, Severity: "P3", Count: 5, Offence: 1, Threshold: 5, Window: 24 * time.Hour, Match: "auth_failed",
			FirstSeen: now, LastSeen: now}
		if err := resp.Submit(ctx, d, detector.Event{}, uint64(k)); err != nil {
			b.Fatal(err)
		}
	}
	<-store.all
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "blocks/s")
}

// countingStore closes all once want requests were written.
type countingStore struct {
	responder.Store
	want int
	all  chan struct{}
}

func (c *countingStore) Prepare(reqs []responder.Request) responder.Batch {
	return countedBatch{c.Store.Prepare(reqs), c}
}

type countedBatch struct {
	responder.Batch
	c *countingStore
}

func (b countedBatch) Write(ctx context.Context) ([]responder.Result, error) {
	c := b.c
	res, err := b.Batch.Write(ctx)
	if err == nil {
		if c.want -= len(res); c.want == 0 {
			close(c.all)
		}
	}
	return res, err
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
	resp := responder.New(responder.Options{Store: redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{}),
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
		var ev blockset.Event
		if json.Unmarshal([]byte(m.Payload), &ev); ev.IP != req.Decision.Key {
			b.Fatalf("event for %s, want %s", ev.IP, req.Decision.Key)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
}

// BenchmarkFailedLoginToBlock is the whole loop as an attacker meets it:
// each iteration is a new address failing five logins through the
// gateway, and the time measured runs from the fifth 401 to the first 403
// (the gateway's audit push, Loki, the daemon's tail, the rules, Redis and
// the gateway's block list). It reports the p50 and p99 over the
// iterations; make test-real runs it 100 times against a real Loki.
func BenchmarkFailedLoginToBlock(b *testing.B) {
	s := newStack(b, stackOptions{ttl: "300s", reconcile: "5s"})
	var took []time.Duration
	b.ResetTimer()
	for k := range b.N {
		ip := fmt.Sprintf("198.51.%d.%d", 100+k/250, k%250+1)
		for range 4 {
			s.login(ip, "guess")
		}
		if a := s.login(ip, "guess"); a.status != 401 {
			b.Fatalf("fifth attempt from %s: %d", ip, a.status)
		}
		start := time.Now()
		for s.request(ip, "GET", "/health", "").status != 403 {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("%s not blocked 30 s after its fifth failure", ip)
			}
			time.Sleep(2 * time.Millisecond) // the attacker's pace while it waits
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99_ms")
}

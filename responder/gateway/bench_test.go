package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/blockset"
)

func benchGateway() *Gateway {
	m := map[netip.Prefix]time.Time{}
	for i := range 100_000 {
		m[blockset.Host(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))] = time.Now().Add(time.Hour)
	}
	bl := NewBlocklist()
	bl.replace(m)
	return New(Options{Blocklist: bl, Log: quietLog(), ClientIP: ClientIPResolver{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
}

// BenchmarkBlockCheck is the block check on the request path: one client
// looked up in an in-memory blocklist of 100,000 entries.
func BenchmarkBlockCheck(b *testing.B) {
	g := benchGateway()
	ip := netip.MustParseAddr("198.18.1.7")
	ctx, now := context.Background(), time.Now()
	b.ReportAllocs()
	start := time.Now()
	for range b.N {
		if v, _ := g.Check(ctx, ip, now); v != Blocked {
			b.Fatal("not blocked")
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/check")
}

// BenchmarkBlockCheckWithNetworks is the block check when networks are
// blocked too: 100,000 addresses and 10,000 networks (/24s and /64s), for
// an address a network covers and one nothing covers.
func BenchmarkBlockCheckWithNetworks(b *testing.B) {
	m := map[netip.Prefix]time.Time{}
	for i := range 100_000 {
		m[blockset.Host(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))] = time.Now().Add(time.Hour)
	}
	for i := range 5_000 {
		m[netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(i >> 8), byte(i), 0}), 24)] = time.Now().Add(time.Hour)
		m[netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 64)] = time.Now().Add(time.Hour)
	}
	bl := NewBlocklist()
	bl.replace(m)
	g := New(Options{Blocklist: bl, Log: quietLog()})
	ctx, now := context.Background(), time.Now()
	for _, c := range []struct {
		name string
		ip   netip.Addr
		want Verdict
	}{
		{"covered", netip.MustParseAddr("100.3.7.99"), Blocked},
		{"covered6", netip.MustParseAddr("2001:db8:307:0:1:2:3:4"), Blocked},
		{"not-covered", netip.MustParseAddr("100.200.7.99"), Allowed},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			for range b.N {
				if v, _ := g.Check(ctx, c.ip, now); v != c.want {
					b.Fatalf("verdict %v, want %v", v, c.want)
				}
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/check")
		})
	}
}

// BenchmarkClientIPAndCheck adds resolving the client from the peer address
// and X-Forwarded-For behind a trusted proxy: the whole per-request cost.
func BenchmarkClientIPAndCheck(b *testing.B) {
	for _, xff := range []string{"198.18.1.7", "198.18.1.7, 10.0.0.9"} {
		b.Run(fmt.Sprintf("hops=%d", len(strings.Split(xff, ","))), func(b *testing.B) {
			g := benchGateway()
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "10.0.0.2:5555"
			r.Header.Set("X-Forwarded-For", xff)
			ctx, now := context.Background(), time.Now()
			b.ReportAllocs()
			start := time.Now()
			for range b.N {
				if v, _ := g.Check(ctx, g.opts.ClientIP.Resolve(r), now); v != Blocked {
					b.Fatal("not blocked")
				}
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/request")
		})
	}
}

// BenchmarkProxyOverhead compares the gateway with a plain
// httputil.ReverseProxy in front of the same upstream, under the same
// concurrent load on loopback, and reports p99 latency and throughput of
// both and their ratios (gateway / plain).
func BenchmarkProxyOverhead(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	plain := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() }})
	defer plain.Close()
	bl := blockedList("203.0.113.7")
	gw := httptest.NewServer(New(Options{Upstream: u, Blocklist: bl, Log: quietLog(), Audit: &memSink{}}))
	defer gw.Close()

	const workers = 8
	run := func(target string, n int) (p99 time.Duration, rps float64) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		lat := make([][]time.Duration, workers)
		var wg sync.WaitGroup
		start := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n / workers {
					t0 := time.Now()
					resp, err := client.Get(target + "/health")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					lat[w] = append(lat[w], time.Since(t0))
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		all := slices.Concat(lat...)
		slices.Sort(all)
		return all[len(all)*99/100], float64(len(all)) / elapsed.Seconds()
	}
	n := max(b.N, 2000)
	run(plain.URL, 500) // warm both connection pools
	run(gw.URL, 500)
	b.ResetTimer()
	// Interleave to share whatever else the machine is doing fairly.
	var pp, gp []time.Duration
	var pr, gr float64
	for range 3 {
		p, r := run(plain.URL, n)
		pp, pr = append(pp, p), pr+r
		p, r = run(gw.URL, n)
		gp, gr = append(gp, p), gr+r
	}
	slices.Sort(pp)
	slices.Sort(gp)
	b.ReportMetric(float64(pp[1].Microseconds()), "plain-p99-µs")
	b.ReportMetric(float64(gp[1].Microseconds()), "gateway-p99-µs")
	b.ReportMetric(pr/3, "plain-req/s")
	b.ReportMetric(gr/3, "gateway-req/s")
	b.ReportMetric(float64(gp[1])/float64(pp[1]), "p99-ratio")
	b.ReportMetric(gr/pr, "throughput-ratio")
}

// BenchmarkBlocklistMemory reports the heap a blocklist of 1,000,000
// entries takes, per entry, and the time of a full pass over it (marking
// every entry and sweeping), the gateway's cost of a reconcile beyond
// Redis's.
func BenchmarkBlocklistMemory(b *testing.B) {
	const n = 1_000_000
	ips := make([]netip.Addr, n)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	exp := time.Now().Add(time.Hour)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	bl := NewBlocklist()
	for _, ip := range ips {
		bl.set(ip, exp)
	}
	perEntry := float64(heap()-before) / n
	b.ResetTimer()
	for range b.N {
		gen := bl.beginPass()
		for _, ip := range ips {
			bl.mark(blockset.Host(ip), exp, true)
		}
		bl.endPass(gen)
	}
	b.StopTimer()
	if bl.Len() != n {
		b.Fatalf("%d entries after a pass", bl.Len())
	}
	b.ReportMetric(perEntry, "bytes/entry")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "pass-ms")
}

package detector

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkSEC010 runs the runbook rule over a stream spread across 1,000,000
// tracked IPv4 addresses and reports events per second and bytes per IP.
func BenchmarkSEC010(b *testing.B) {
	const ips = 1_000_000
	evs := make([]Event, ips)
	for i := range evs {
		evs[i] = Event{Action: ActionAuthFailed, IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
	}
	before := heapAlloc()
	e := mustEngine(b, Config{Rules: []Rule{sec010()}, MaxKeys: ips})
	// Fill the table so every measured event hits a tracked key.
	var ds []Decision
	for i := range evs {
		evs[i].Time = t0.Add(time.Duration(i))
		ds = observe(e, evs[i], ds[:0])
	}
	bytesPerIP := float64(heapAlloc()-before) / ips
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		ev := evs[i%ips]
		ev.Time = t0.Add(time.Second + time.Duration(i))
		ds = observe(e, ev, ds[:0])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(bytesPerIP, "bytes/ip")
}

// BenchmarkDefaultRules runs the embedded default rule set (SEC-010, account
// enumeration, the targeted account, the global surge alarm) over traffic from 100,000 IPs trying
// a handful of usernames each, and reports events per second.
func BenchmarkDefaultRules(b *testing.B) {
	rules := []Rule{sec010(),
		{Name: "account-enumeration", Match: ActionAuthFailed, PerIP: true, Distinct: "username", Window: 10 * time.Minute, Threshold: 11, BlockTTL: time.Hour, Alert: true},
		targetedAccount(),
		{Name: "failed-login-surge", Match: ActionAuthFailed, Window: 5 * time.Minute, Threshold: 101, Alert: true}}
	e := mustEngine(b, Config{Rules: rules})
	const ips = 100_000
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
	evs := make([]Event, 1<<16)
	for i := range evs {
		n := (i * 7919) % ips
		evs[i] = Event{Action: ActionAuthFailed, IP: netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), Username: users[i%len(users)]}
	}
	var ds []Decision
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		ev := evs[i&(1<<16-1)]
		ev.Time = t0.Add(time.Duration(i) * time.Microsecond)
		ds = observe(e, ev, ds[:0])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkIPv6SprayMemory feeds 50,000,000 distinct IPv6 addresses (an
// attacker rotating through a /64... and beyond) to the SEC-010 rule capped at
// 1,000,000 keys, and reports the heap after every 10 million: memory stays
// flat under the cap. Each benchmark iteration is one full spray (~25 s).
func BenchmarkIPv6SprayMemory(b *testing.B) {
	heap := func() float64 { return float64(heapAlloc()) / (1 << 20) }
	for range b.N {
		e := mustEngine(b, Config{Rules: []Rule{sec010()}, MaxKeys: 1_000_000})
		var marks []float64
		var ds []Decision
		var a [16]byte
		a[0], a[1] = 0x20, 0x01
		for i := range 50_000_000 {
			a[8], a[9], a[10], a[11] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			ds = observe(e, Event{Time: t0.Add(time.Duration(i)), Action: ActionAuthFailed, IP: netip.AddrFrom16(a)}, ds[:0])
			if i > 0 && i%10_000_000 == 0 {
				marks = append(marks, heap())
			}
		}
		marks = append(marks, heap())
		for k, m := range marks {
			b.ReportMetric(m, fmt.Sprintf("heap-MiB@%dM", 10*(k+1)))
		}
		b.ReportMetric(float64(e.Stats().TrackedKeys), "tracked-keys")
	}
}

// BenchmarkCheckpoint saves and loads the state of 1,000,000 IPv4
// addresses with one to four failures each under SEC-010: the cost of a
// checkpoint at attack scale, on the detector's goroutine (save) and at
// start (load).
func BenchmarkCheckpoint(b *testing.B) {
	const ips = 1_000_000
	cfg := Config{Rules: []Rule{sec010()}, MaxKeys: ips}
	e := mustEngine(b, cfg)
	for i := range ips {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		for j := range 1 + i%4 {
			observe(e, Event{Action: ActionAuthFailed, IP: ip, Time: t0.Add(time.Duration(i)*time.Microsecond + time.Duration(j)*time.Millisecond)}, nil)
		}
	}
	now := t0.Add(time.Minute)
	next := mustEngine(b, cfg)
	var buf []byte
	var save, load time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		var keys int
		buf, keys = e.Checkpoint(buf[:0], now)
		save += time.Since(start)
		if keys != ips {
			b.Fatalf("%d keys saved", keys)
		}
		start = time.Now()
		if got, err := next.Load(buf, now, time.Time{}); err != nil || got.Keys != ips {
			b.Fatalf("loaded %+v: %v", got, err)
		}
		load += time.Since(start)
	}
	b.ReportMetric(float64(len(buf))/ips, "bytes/key")
	b.ReportMetric(float64(save.Milliseconds())/float64(b.N), "save-ms")
	b.ReportMetric(float64(ips)*float64(b.N)/load.Seconds(), "load-keys/s")
}

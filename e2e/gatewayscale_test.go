package e2e

import (
	"context"
	"fmt"

	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/redisblock"
)

// gatewayInterval is the full-read interval the scale benchmark runs the
// gateway with: its default.
const gatewayInterval = 30 * time.Second

// BenchmarkGatewayWithAMillionBlocks runs the gateway (built without
// -race) against a redis-server holding 1,000,000 blocks, and reports what
// an SRE sizes it by: start-up until ready, peak RSS, the gateway's and
// Redis's CPU while idle over two full-read intervals, the time from a
// block written by authguard to its first 403 (each iteration one block),
// and the time a block set by hand with redis-cli takes. make bench runs
// it once (-benchtime 1x): it takes about two minutes.
func BenchmarkGatewayWithAMillionBlocks(b *testing.B) {
	const blocks = 1_000_000
	r := startRedisServer(b)
	rdb := r.client()
	ctx := context.Background()
	fillBlocks(b, rdb, blocks)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	b.Cleanup(app.Close)
	gwAddr, adminAddr := freeAddr(b), freeAddr(b)
	began := time.Now()
	gw := startCmd(b, "authguard-gateway", exec.Command(plainBinary(b, "authguard-gateway"), "--listen", gwAddr, "--admin-listen", adminAddr,
		"--upstream", app.URL, "--redis-url", r.url(), "--trusted-proxies", "127.0.0.1/32", "--reconcile-interval", gatewayInterval.String(),
		"--no-audit-stdout", "--log-format", "text"))
	eventually(b, 2*time.Minute, "the gateway to read 1M blocks", func() bool { return gw.alive(b) && httpStatus("http://"+adminAddr+"/readyz") == 200 })
	startup := time.Since(began)
	if n := metricAt(adminAddr, "authguard_gateway_blocklist_entries"); n != blocks {
		b.Fatalf("the gateway holds %v blocks, want %d", n, blocks)
	}
	refused := func(ip string) bool {
		req, _ := http.NewRequest("GET", "http://"+gwAddr+"/health", nil)
		req.Header.Set("X-Forwarded-For", ip)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusForbidden
	}
	if !refused("10.0.0.1") || !refused("10.15.66.63") {
		b.Fatal("blocks from redis are not enforced")
	}

	// Idle: two full reads happen in this span, nothing else.
	gwPid, redisPid := gw.cmd.Process.Pid, r.cmd.Process.Pid
	gwCPU, redisCPU := cpuTime(b, gwPid), cpuTime(b, redisPid)
	idleFrom := time.Now()
	time.Sleep(2*gatewayInterval + time.Second) // a measurement window, not a wait for an event
	idle := time.Since(idleFrom)
	gwIdle := (cpuTime(b, gwPid) - gwCPU).Seconds() / idle.Seconds() * 100
	redisIdle := (cpuTime(b, redisPid) - redisCPU).Seconds() / idle.Seconds() * 100

	// A block written by authguard, enforced.
	store := redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{})
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N * 20 { // 20 samples an iteration: -benchtime 1x gives a p50
		ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		at := time.Now()
		if _, err := store.Manual(ctx, blockset.Host(ip), time.Hour, "bench", "scale benchmark", at); err != nil {
			b.Fatal(err)
		}
		eventually(b, 5*time.Second, ip.String()+" refused", func() bool { return refused(ip.String()) })
		lat = append(lat, time.Since(at))
	}
	b.StopTimer()

	// A block set by hand: picked up by the next full read.
	rdb.Set(ctx, "ip_block:192.0.2.77", "1", 5*time.Minute)
	handAt := time.Now()
	eventually(b, gatewayInterval+30*time.Second, "the hand-set block to be enforced", func() bool { return refused("192.0.2.77") })
	hand := time.Since(handAt)

	slices.Sort(lat)
	b.ReportMetric(startup.Seconds(), "startup-s")
	b.ReportMetric(float64(statusKB(b, gwPid, "VmHWM"))/1024, "peak-rss-MiB")
	b.ReportMetric(gwIdle, "idle-cpu-%")
	b.ReportMetric(redisIdle, "redis-idle-cpu-%")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "new-block-p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "new-block-max-ms")
	b.ReportMetric(hand.Seconds(), "hand-set-s")
}

// fillBlocks writes n blocks as the daemon leaves them: ip_block with an
// hour's TTL, the tally and the index.
func fillBlocks(t testing.TB, rdb *redis.Client, n int) {
	t.Helper()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UnixMilli()
	for lo := 0; lo < n; lo += 10_000 {
		pipe := rdb.Pipeline()
		for i := lo; i < min(n, lo+10_000); i++ {
			ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
			pipe.Set(ctx, "ip_block:"+ip, "1", time.Hour)
			pipe.Set(ctx, "login_fail:"+ip, "5", time.Hour)
			pipe.ZAdd(ctx, "authguard:blocks", redis.Z{Score: float64(exp), Member: ip})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rdb.Set(ctx, "authguard:epoch", "1", 0)
}

// cpuTime is the user and system CPU time a process has used, from
// /proc/<pid>/stat (in clock ticks of 10 ms).
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	user, _ := strconv.ParseInt(f[11], 10, 64)
	sys, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(user+sys) * 10 * time.Millisecond
}

// A change the gateway's pub/sub did not carry (it keeps nothing for a
// subscriber that was away) is read from the changes stream within about a
// second, long before the next full read.
func TestTheGatewayReadsTheChangesPubSubLost(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", reconcile: "1h"})
	ctx := context.Background()
	ip := "203.0.113.130"
	exp := time.Now().Add(5 * time.Minute)
	// What a block write leaves, without the PUBLISH.
	s.rdb.Set(ctx, "ip_block:"+ip, "1", 5*time.Minute)
	s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "authguard:changes", Values: []any{"e", fmt.Sprintf(`{"op":"block","ip":%q,"expires_ms":%d}`, ip, exp.UnixMilli())}})
	s.awaitBlocked(ip)
	s.rdb.Del(ctx, "ip_block:"+ip)
	s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "authguard:changes", Values: []any{"e", fmt.Sprintf(`{"op":"unblock","ip":%q}`, ip)}})
	s.awaitAllowed(ip)
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/redisblock"
	"github.com/authguard/authguard/responder/storetest"
)

func blockRequest(ip string, seq int, at time.Time) responder.Request {
	return storetest.Request(ip, responder.ActBlock, fmt.Sprintf("test-%d", seq), at, 10*time.Minute)
}

// Connections are killed again and again while batches of blocks are
// written and retried: afterwards every block is whole (ip_block, tally,
// index, metadata), written once (one evidence record, one event), and none
// is lost.
func TestBlocksAreAllOrNothingWhenConnectionsDie(t *testing.T) {
	srv := startRedisServer(t)
	rdb := srv.client()
	ctx := context.Background()
	writer := redis.NewClient(&redis.Options{Addr: srv.addr, MaxRetries: -1})
	defer writer.Close()
	store := redisblock.New(writer, blockset.DefaultKeys, redisblock.Options{})

	sub := rdb.Subscribe(ctx, "authguard:blocks")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	events := map[string]int{}
	var evMu sync.Mutex
	go func() {
		for m := range sub.Channel() {
			var ev blockset.Event
			json.Unmarshal([]byte(m.Payload), &ev)
			evMu.Lock()
			events[ev.IP]++
			evMu.Unlock()
		}
	}()

	killer := srv.client()
	stop := make(chan struct{})
	killed := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if n, err := killer.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Result(); err == nil {
				killed += int(n)
			}
		}
	}()

	const total = 2000
	now := time.Now()
	var ips []string
	failures := 0
	for b := 0; b < total/200; b++ {
		var reqs []responder.Request
		for i := range 200 {
			n := b*200 + i
			ip := fmt.Sprintf("10.%d.%d.%d", n>>16, (n>>8)&255, n&255)
			ips = append(ips, ip)
			reqs = append(reqs, blockRequest(ip, n, now))
		}
		batch := store.Prepare(reqs)
		for {
			if _, err := batch.Write(ctx); err == nil {
				break
			}
			failures++
			if failures > 10000 {
				t.Fatal("writes never went through")
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d connections killed, %d batch writes failed and were retried", killed, failures)
	if failures == 0 {
		t.Fatal("no write was interrupted: the test proved nothing")
	}

	check := srv.client()
	evidence, err := check.XRange(ctx, "authguard:evidence", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	perIP := map[string]int{}
	for _, m := range evidence {
		perIP[evidenceField(m, "ip")]++
	}
	eventually(t, 10*time.Second, "every block event to arrive", func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		return len(events) == total
	})
	for _, ip := range ips {
		pipe := check.Pipeline()
		b := pipe.Exists(ctx, "ip_block:"+ip)
		f := pipe.Get(ctx, "login_fail:"+ip)
		m := pipe.HGet(ctx, "authguard:block:"+ip, "rule")
		z := pipe.ZScore(ctx, "authguard:blocks", ip)
		pipe.Exec(ctx)
		if b.Val() != 1 || f.Val() != "5" || m.Val() != "failed-login-burst" || z.Err() != nil {
			t.Fatalf("%s is partial: ip_block=%d login_fail=%q rule=%q index=%v", ip, b.Val(), f.Val(), m.Val(), z.Err())
		}
		evMu.Lock()
		n := events[ip]
		evMu.Unlock()
		if perIP[ip] != 1 || n != 1 {
			t.Fatalf("%s written %d times in the evidence and %d times on the channel, want once", ip, perIP[ip], n)
		}
	}
}

// Redis goes away for 30 s during an attack and comes back empty: every
// decision made meanwhile is in Redis afterwards, in order, with the TTL
// left that it would have had, counted from the decision.
func TestDecisionsSurviveA30sRedisOutage(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "120s"})
	ctx := context.Background()
	s.redis.stop()
	attackers := []string{"203.0.113.70", "203.0.113.71", "203.0.113.72"}
	decided := map[string]time.Time{}
	for _, ip := range attackers {
		for range 5 {
			if a := s.login(ip, "guess"); a.status != http.StatusUnauthorized {
				t.Fatalf("%s during the outage: %d", ip, a.status)
			}
		}
		decided[ip] = time.Now()
	}
	eventually(t, 20*time.Second, "the daemon to decide all three during the outage", func() bool {
		return s.metric(`authguard_decisions_total{kind="block",rule="failed-login-burst"}`) >= 3
	})
	outageLeft := 30*time.Second - time.Since(decided[attackers[0]])
	if outageLeft > 0 {
		time.Sleep(outageLeft) // the outage itself is what is under test
	}
	s.redis.start()
	for _, ip := range attackers {
		eventually(t, 30*time.Second, "the block of "+ip+" to be written", func() bool { return s.exists("ip_block:" + ip) })
	}
	for _, ip := range attackers {
		ttl := s.rdb.PTTL(ctx, "ip_block:"+ip).Val()
		want := 120*time.Second - time.Since(decided[ip])
		if ttl > want+2*time.Second || ttl < want-5*time.Second {
			t.Errorf("%s: %v left, want about %v (counted from the decision)", ip, ttl, want)
		}
	}
	evidence := s.rdb.XRange(ctx, "authguard:evidence", "-", "+").Val()
	var order []string
	for _, m := range evidence {
		order = append(order, evidenceField(m, "ip"))
	}
	if strings.Join(order, " ") != strings.Join(attackers, " ") {
		t.Errorf("evidence order %v, want %v", order, attackers)
	}
	for _, ip := range attackers {
		s.awaitBlocked(ip)
	}
}

// Runbook-style repeat offences: the third block of one IP lasts factor² ×
// the base TTL.
func TestThirdOffenceGetsFactorSquaredTTL(t *testing.T) {
	s := newStack(t, stackOptions{rules: `rules:
  - name: failed-login-burst
    match: {action: auth_failed}
    group_by: client_ip
    window: 24h
    threshold: 5
    block: {ttl: 1s, escalate: {factor: 2, max: 1m}}
    alert: true
`})
	ctx := context.Background()
	ip := "203.0.113.80"
	var ttls []time.Duration
	for offence := 1; offence <= 3; offence++ {
		for range 5 {
			s.login(ip, "guess")
		}
		eventually(t, 15*time.Second, fmt.Sprintf("offence %d to be blocked", offence), func() bool { return s.exists("ip_block:" + ip) })
		ttls = append(ttls, s.rdb.PTTL(ctx, "ip_block:"+ip).Val())
		if n, _ := s.rdb.Get(ctx, "authguard:offenses:"+ip).Int(); n != offence {
			t.Errorf("offence counter holds %d, want %d", n, offence)
		}
		eventually(t, 15*time.Second, "the block to expire", func() bool { return !s.exists("ip_block:" + ip) })
		s.awaitAllowed(ip)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if ttls[i] > want || ttls[i] < want-time.Second {
			t.Errorf("offence %d: TTL %v, want just under %v", i+1, ttls[i], want)
		}
	}
}

func (s *stack) cli(args ...string) (string, error) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "authguard"), append(args, "--redis-url", s.redis.url())...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The CLI's unblock behaves like the runbook's DEL of both keys: the IP
// gets five fresh attempts. Manual blocks, listing and clearing work on the
// same keys, and each leaves evidence.
func TestOperatorCLI(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ctx := context.Background()
	ip := "203.0.113.90"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	out, err := s.cli("blocks", "list", "--output", "json")
	if err != nil {
		t.Fatal(out)
	}
	var listed []struct {
		IP, Rule, Incident string
		Count              int
		ExpiresIn          int64 `json:"expires_in_seconds"`
	}
	json.Unmarshal([]byte(out), &listed)
	if len(listed) != 1 || listed[0].IP != ip || listed[0].Rule != "failed-login-burst" || listed[0].Count != 5 || listed[0].ExpiresIn < 290 || listed[0].Incident == "" {
		t.Fatalf("blocks list: %s", out)
	}
	incident := listed[0].Incident

	if out, err := s.cli("blocks", "remove", ip, "--reason", "customer called", "--operator", "alice"); err != nil || !strings.Contains(out, "unblocked") {
		t.Fatalf("blocks remove: %s %v", out, err)
	}
	if s.exists("ip_block:"+ip) || s.exists("login_fail:"+ip) {
		t.Fatal("blocks remove left a runbook key behind")
	}
	s.expectCleanSlate(ip, "blocks remove")

	report, err := s.cli("incidents", "show", incident)
	if err != nil {
		t.Fatal(report)
	}
	for _, want := range []string{"# Authentication Abuse Incident Report", "**Incident ID**: " + incident, "## Timeline", "## Impact", "## Actions Taken",
		"5 failed logins", "block by rule failed-login-burst", "unblock by alice (customer called)", "Resolved (unblocked by alice)"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}

	manual := "198.51.100.91"
	if out, err := s.cli("blocks", "add", manual, "--ttl", "1h", "--reason", "seen in another incident"); err != nil {
		t.Fatal(out)
	}
	s.awaitBlocked(manual)
	if ttl := s.rdb.TTL(ctx, "ip_block:"+manual).Val(); ttl < 59*time.Minute {
		t.Errorf("manual block TTL %v", ttl)
	}
	s.rdb.Set(ctx, "ip_block:198.51.100.92", "1", 0) // by hand, no TTL
	out, _ = s.cli("blocks", "list")
	for _, want := range []string{ip, manual, "198.51.100.92", "(set by hand)", "never"} {
		if !strings.Contains(out, want) {
			t.Errorf("blocks list lacks %q:\n%s", want, out)
		}
	}
	if out, err := s.cli("blocks", "clear", "--reason", "end of incident"); err == nil {
		t.Errorf("clear without --all succeeded: %s", out)
	}
	if out, err := s.cli("blocks", "clear", "--all", "--reason", "end of incident"); err != nil || !strings.Contains(out, "cleared 3 IPs") {
		t.Fatalf("blocks clear: %s %v", out, err)
	}
	for _, k := range []string{"ip_block:" + ip, "login_fail:" + ip, "ip_block:" + manual, "ip_block:198.51.100.92"} {
		if s.exists(k) {
			t.Errorf("%s survived blocks clear", k)
		}
	}
	s.awaitAllowed(manual)
}

// Sentinel: the daemon and the gateway find the master through Sentinel,
// and keep working after Sentinel fails it over to the replica.
func TestSentinelFailover(t *testing.T) {
	master := startRedisServer(t)
	replica := startRedisServer(t, "--replicaof", "127.0.0.1", master.port())
	sentinel := startSentinel(t, master)
	sentinelArgs := []string{"--redis-sentinel-addrs", sentinel, "--redis-sentinel-master", "authguard"}
	s := newStack(t, stackOptions{ttl: "300s", dArgs: sentinelArgs, gwArgs: sentinelArgs, redis: master})

	ip := "203.0.113.100"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)

	// Wait until the replica has the block, then lose the master.
	rc := replica.client()
	eventually(t, 10*time.Second, "the replica to hold the block", func() bool { return rc.Exists(context.Background(), "ip_block:"+ip).Val() == 1 })
	master.stop()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer sc.Close()
	eventually(t, 30*time.Second, "Sentinel to promote the replica", func() bool {
		addr, err := sc.GetMasterAddrByName(context.Background(), "authguard").Result()
		return err == nil && addr[1] == replica.port()
	})
	if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusForbidden {
		t.Errorf("the block was lost in the failover: %d", a.status)
	}
	after := "203.0.113.101"
	for range 5 {
		s.login(after, "guess")
	}
	s.awaitBlocked(after)
	if rc.Exists(context.Background(), "ip_block:"+after).Val() != 1 {
		t.Error("the block after the failover is not on the new master")
	}
}

func startSentinel(t *testing.T, master *redisServer) string {
	t.Helper()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("port %s\nbind 127.0.0.1\nsentinel monitor authguard 127.0.0.1 %s 1\nsentinel down-after-milliseconds authguard 1000\nsentinel failover-timeout authguard 5000\n", port, master.port())), 0o644)
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	eventually(t, 10*time.Second, "Sentinel to see the replica", func() bool {
		reps, err := sc.Replicas(context.Background(), "authguard").Result()
		return err == nil && len(reps) == 1
	})
	return addr
}

// evidenceField reads one field of an evidence record (stored as JSON).
func evidenceField(m redis.XMessage, name string) string {
	var rec map[string]any
	json.Unmarshal([]byte(fmt.Sprint(m.Values["record"])), &rec)
	return fmt.Sprint(rec[name])
}

// Where an incident's Slack page is, is kept with the block: found again
// for that incident only, and gone with the block's metadata.
func TestPageLocationIsKeptWithTheBlock(t *testing.T) {
	rdb := startRedisServer(t).client()
	store := redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{})
	ctx := context.Background()
	ip := netip.MustParseAddr("203.0.113.160")
	res, err := store.Prepare([]responder.Request{blockRequest(ip.String(), 1, time.Now())}).Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	incident := res[0].Incident
	if err := store.SaveMessage(ctx, blockset.Host(ip), "another-incident", "C1", "1.1"); err != nil {
		t.Fatal(err)
	}
	if _, ts, _ := store.LoadMessage(ctx, blockset.Host(ip), incident); ts != "" {
		t.Fatalf("a page of another incident was kept for this one: %q", ts)
	}
	if err := store.SaveMessage(ctx, blockset.Host(ip), incident, "C1", "1700000000.000100"); err != nil {
		t.Fatal(err)
	}
	if ch, ts, err := store.LoadMessage(ctx, blockset.Host(ip), incident); err != nil || ch != "C1" || ts != "1700000000.000100" {
		t.Fatalf("loaded %q %q %v", ch, ts, err)
	}
	if ttl := rdb.PTTL(ctx, "authguard:block:"+ip.String()).Val(); ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("the metadata lost its expiry: %v", ttl)
	}
	if _, err := store.Unblock(ctx, blockset.Host(ip), "alice", "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ts, _ := store.LoadMessage(ctx, blockset.Host(ip), incident); ts != "" {
		t.Errorf("the page outlived the block: %q", ts)
	}
}

// The Redis store keeps the contract the responder relies on, as the
// in-memory one its tests use does (storetest runs the same cases on both).
func TestRedisStoreKeepsTheStoreContract(t *testing.T) {
	rdb := startRedisServer(t).client()
	storetest.Run(t, func(t *testing.T, now func() time.Time) storetest.Subject {
		ctx := context.Background()
		if err := rdb.FlushDB(ctx).Err(); err != nil { // the server this test started
			t.Fatal(err)
		}
		return storetest.Subject{Store: redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{Now: now}),
			Blocked: func(t *testing.T, ip netip.Addr) time.Duration {
				return max(rdb.PTTL(ctx, "ip_block:"+ip.String()).Val(), 0)
			},
			Clear: func(t *testing.T, ip netip.Addr) {
				if err := rdb.Del(ctx, "ip_block:"+ip.String(), "login_fail:"+ip.String()).Err(); err != nil {
					t.Fatal(err)
				}
			}}
	})
}

// Redis restarted empty (no persistence, or a failover to a replica that
// had not caught up) lost every block for good, and neither the daemon nor
// the gateway noticed. Now the gateway goes on refusing what it knew, and
// within 10 s the daemon has written every standing block again, with what
// is left of its TTL and its tally.
func TestBlocksComeBackAfterRedisRestartsEmpty(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true})
	ctx := context.Background()
	var ips []string
	left := map[string]time.Duration{}
	for i := range 20 {
		ip := fmt.Sprintf("203.0.113.%d", 100+i)
		ips = append(ips, ip)
		if code := s.pushAnswer(t, s.token(t), "", "application/json", fiveFailures(ip)); code != http.StatusNoContent {
			t.Fatalf("push: %d", code)
		}
	}
	for _, ip := range ips {
		eventually(t, 10*time.Second, ip+" to be blocked", func() bool { return s.exists("ip_block:" + ip) })
		s.awaitBlocked(ip)
		left[ip] = s.rdb.PTTL(ctx, "ip_block:"+ip).Val()
	}
	// The daemon holds its epoch key, and the gateway has read Redis since.
	eventually(t, 10*time.Second, "the epoch key", func() bool { return s.exists("authguard:epoch") })
	seen := float64(time.Now().UnixNano()) / 1e9
	eventually(t, 10*time.Second, "the gateway to reconcile", func() bool {
		return metricAt(strings.TrimPrefix(s.gwAdmin, "http://"), "authguard_gateway_last_reconcile_timestamp_seconds") > seen
	})

	s.redis.stop()
	lost := time.Now()
	s.redis.start() // empty: --save "" and no AOF
	if s.exists("ip_block:" + ips[0]) {
		t.Fatal("redis-server came back with its data")
	}
	// The gateway still refuses them while Redis has nothing.
	for _, ip := range ips[:3] {
		if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusForbidden {
			t.Errorf("%s: %d while Redis was empty, want 403", ip, a.status)
		}
	}
	eventually(t, 10*time.Second, "every block to be written again", func() bool {
		for _, ip := range ips {
			if !s.exists("ip_block:" + ip) {
				return false
			}
		}
		return true
	})
	t.Logf("all %d blocks back %v after Redis came back empty", len(ips), time.Since(lost).Round(time.Millisecond))
	for _, ip := range ips {
		want := left[ip] - time.Since(lost)
		if got := s.rdb.PTTL(ctx, "ip_block:"+ip).Val(); got > left[ip] || got < want-3*time.Second {
			t.Errorf("%s came back with %v left, want about %v", ip, got.Round(time.Second), want.Round(time.Second))
		}
		if n := s.rdb.Get(ctx, "login_fail:"+ip).Val(); n != "5" {
			t.Errorf("login_fail:%s = %q, want the tally 5", ip, n)
		}
		s.awaitBlocked(ip)
	}
	eventually(t, 10*time.Second, "the restore to be counted and the epoch set again", func() bool {
		return s.metric("authguard_blocks_restored_total") == float64(len(ips)) && s.exists("authguard:epoch")
	})
	restores := 0
	for _, m := range s.rdb.XRange(ctx, "authguard:evidence", "-", "+").Val() {
		if evidenceField(m, "action") == "block restored" {
			restores++
		}
	}
	if restores != len(ips) {
		t.Errorf("%d evidence records of a restore, want %d", restores, len(ips))
	}
}

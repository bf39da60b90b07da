package e2e

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/redisblock"
)

// A daemon fed by pushes alone (no Loki to re-read) counts on across its
// restarts from the checkpoint of its windows: four failures, a SIGTERM,
// one more failure and the address is blocked with a tally of five; the
// same after a SIGKILL once a checkpoint has been written; and after a
// restart the runbook's DEL of ip_block alone is still not an unblock.
func TestCountsSurviveRestartsWithoutLoki(t *testing.T) {
	// The Redis starts with a checkpoint that is not one (a torn write, a
	// hand): the daemon refuses it, says so and starts empty.
	r := startRedisServer(t)
	ctx := context.Background()
	redisblock.New(r.client(), blockset.DefaultKeys, redisblock.Options{}).SaveCheckpoint(ctx, []byte("AGCK\x01 not a checkpoint"), time.Hour)
	s := newStack(t, stackOptions{redis: r, direct: true, ttl: "300s", dArgs: []string{"--checkpoint-interval", "1s"}})
	// The line may still be on its way through the output pipe.
	eventually(t, 5*time.Second, "the daemon to say it refused the checkpoint", func() bool {
		return strings.Contains(s.daemon.output(), "checkpoint in redis is refused")
	})
	saved := func() float64 { return s.metric(`authguard_checkpoint_saves_total{result="success"}`) }
	fourFailures := func(ip string) {
		t.Helper()
		before := s.metric("authguard_events_processed_total")
		for i := range 4 {
			if a := s.login(ip, "guess"); a.status != http.StatusUnauthorized {
				t.Fatalf("attempt %d from %s: %d", i+1, ip, a.status)
			}
		}
		s.awaitEvents(before + 4)
	}
	fifthBlocks := func(ip, after string) {
		t.Helper()
		if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusOK {
			t.Fatalf("%s refused before its fifth failure (after %s): %d", ip, after, a.status)
		}
		s.login(ip, "guess")
		s.awaitBlocked(ip)
		if v := s.rdb.Get(ctx, "login_fail:"+ip).Val(); v != "5" {
			t.Errorf("after %s: login_fail:%s = %q, want 5", after, ip, v)
		}
	}

	fourFailures("203.0.113.120")
	s.restartDaemon(func() {})
	if n := s.metric("authguard_checkpoint_loaded_keys"); n != 1 {
		t.Errorf("the daemon restarted after a SIGTERM loaded %v keys from its checkpoint, want 1", n)
	}
	fifthBlocks("203.0.113.120", "a SIGTERM")

	fourFailures("203.0.113.121")
	// A SIGKILL leaves no last checkpoint: wait for a periodic one that
	// began after the four failures were counted.
	counted := saved()
	eventually(t, 10*time.Second, "a checkpoint after the four failures", func() bool { return saved() >= counted+2 })
	s.restartDaemonBy((*process).kill, func() {})
	fifthBlocks("203.0.113.121", "a SIGKILL")

	// The runbook: deleting ip_block alone is not an unblock; the next
	// failed login blocks again, after a restart as before one.
	blocked := "203.0.113.120"
	if err := s.rdb.Del(ctx, "ip_block:"+blocked).Err(); err != nil {
		t.Fatal(err)
	}
	s.awaitAllowed(blocked)
	if a := s.login(blocked, "guess"); a.status != http.StatusUnauthorized {
		t.Fatalf("the failed login after DEL ip_block: %d", a.status)
	}
	s.awaitBlocked(blocked)
}

// A checkpoint is kept in Redis in parts of at most 512 KiB behind one
// head: it comes back byte for byte, a new save removes the old parts,
// and a head or part that is not what a save wrote is an error, never a
// short or mixed checkpoint.
func TestCheckpointsAreKeptInPartsBehindOneHead(t *testing.T) {
	r := startRedisServer(t)
	rdb := r.client()
	ctx := context.Background()
	store := redisblock.New(rdb, blockset.DefaultKeys, redisblock.Options{})
	if data, err := store.LoadCheckpoint(ctx); data != nil || err != nil {
		t.Fatalf("an empty redis gave a checkpoint of %d bytes (%v)", len(data), err)
	}
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(rand.IntN(256))
	}
	parts := func() int { return len(rdb.Keys(ctx, "authguard:checkpoint:*").Val()) }
	if err := store.SaveCheckpoint(ctx, big, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := parts(); n != 7 {
		t.Errorf("a 3 MiB checkpoint in %d parts, want 7", n)
	}
	if ttl := rdb.TTL(ctx, "authguard:checkpoint").Val(); ttl <= 59*time.Minute {
		t.Errorf("the head expires in %v, want the hour asked", ttl)
	}
	if got, err := store.LoadCheckpoint(ctx); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("loaded %d bytes (%v), saved %d", len(got), err, len(big))
	}
	small := []byte("a small one")
	if err := store.SaveCheckpoint(ctx, small, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := parts(); n != 1 {
		t.Errorf("%d parts after a small save, want the old ones gone", n)
	}
	if got, _ := store.LoadCheckpoint(ctx); !bytes.Equal(got, small) {
		t.Errorf("loaded %q after the second save", got)
	}
	for _, k := range rdb.Keys(ctx, "authguard:checkpoint:*").Val() {
		rdb.Del(ctx, k)
	}
	if _, err := store.LoadCheckpoint(ctx); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("a checkpoint whose part is gone: %v", err)
	}
	rdb.Set(ctx, "authguard:checkpoint", "hello", 0)
	if _, err := store.LoadCheckpoint(ctx); err == nil {
		t.Error("a head written by hand was taken")
	}
}

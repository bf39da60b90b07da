package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authguard/authguard/e2e/testcert"
)

// A block the daemon writes reaches the gateway by pub/sub: with the
// reconcile interval set to an hour nothing else could deliver it, and the
// median time from the block event to the first 403 is within 50 ms.
func TestDaemonBlocksAreEnforcedWithin50ms(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", reconcile: "1h"})
	ctx := context.Background()
	sub := s.rdb.Subscribe(ctx, "authguard:blocks")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	var lat []time.Duration
	for i := range 5 {
		ip := fmt.Sprintf("203.0.113.%d", 50+i)
		for range 5 {
			s.login(ip, "guess")
		}
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		published := time.Now()
		if !strings.Contains(msg.Payload, `"ip":"`+ip+`"`) {
			t.Fatalf("block event %s, want one for %s", msg.Payload, ip)
		}
		deadline := published.Add(5 * time.Second)
		for s.request(ip, "GET", "/health", "").status != http.StatusForbidden {
			if time.Now().After(deadline) {
				t.Fatalf("block of %s not enforced within 5 s", ip)
			}
		}
		lat = append(lat, time.Since(published))
	}
	slices.Sort(lat)
	t.Logf("block event -> 403 latencies: %v", lat)
	if lat[2] > 50*time.Millisecond {
		t.Errorf("median latency %v, want within 50ms", lat[2])
	}
}

// A block set by hand is picked up by the periodic reconcile, well within
// its interval.
func TestManualBlockWithinTheReconcileInterval(t *testing.T) {
	s := newStack(t, stackOptions{reconcile: "500ms"})
	ip := "203.0.113.60"
	s.awaitAllowed(ip)
	set := time.Now()
	s.rdb.Set(context.Background(), "ip_block:"+ip, "1", 300*time.Second)
	s.awaitBlocked(ip)
	if took := time.Since(set); took > 500*time.Millisecond+750*time.Millisecond {
		t.Errorf("enforced after %v with a 500ms reconcile interval", took)
	}
}

// With --check-redis-on-miss a block set by hand applies to the very next
// request, though the reconcile interval is an hour.
func TestCheckRedisOnMissEnforcesManualBlocksAtOnce(t *testing.T) {
	s := newStack(t, stackOptions{reconcile: "1h", gwArgs: []string{"--check-redis-on-miss"}})
	ip := "203.0.113.61"
	if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusOK {
		t.Fatalf("before the block: %d", a.status)
	}
	s.rdb.Set(context.Background(), "ip_block:"+ip, "1", 300*time.Second)
	if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusForbidden || !strings.Contains(a.body, "AUTH_004") {
		t.Fatalf("the next request after SET got %d %s", a.status, a.body)
	}
}

// Redis dies: the blocks the gateway already knows stay enforced, and it
// says so on /readyz.
func TestKnownBlocksSurviveARedisOutage(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ip := "203.0.113.62"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	s.redis.stop()
	eventually(t, 10*time.Second, "the gateway to notice Redis is gone", func() bool {
		resp, err := http.Get(s.gwAdmin + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		buf := make([]byte, 200)
		n, _ := resp.Body.Read(buf)
		return strings.Contains(string(buf[:n]), "redis unreachable")
	})
	if a := s.request(ip, "GET", "/health", ""); a.status != http.StatusForbidden {
		t.Errorf("a known block was dropped during the outage: %d", a.status)
	}
	if a := s.login("198.51.100.62", "correct horse"); a.status != http.StatusOK {
		t.Errorf("another client was refused during the outage: %d", a.status)
	}
}

// A gateway that starts while Redis is down follows --fail-mode.
func TestFailModeWhenRedisIsDownAtStart(t *testing.T) {
	app := http.NewServeMux()
	app.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	appSrv := &http.Server{Handler: app}
	appAddr := freeAddr(t)
	ln, err := listen(appAddr)
	if err != nil {
		t.Fatal(err)
	}
	go appSrv.Serve(ln)
	defer appSrv.Close()
	deadRedis := "redis://" + freeAddr(t) + "/0" // nothing listens there
	for _, tt := range []struct {
		mode string
		want int
	}{{"closed", http.StatusServiceUnavailable}, {"open", http.StatusOK}} {
		t.Run(tt.mode, func(t *testing.T) {
			addr, admin := freeAddr(t), freeAddr(t)
			start(t, "authguard-gateway", "--listen", addr, "--admin-listen", admin, "--upstream", "http://"+appAddr,
				"--redis-url", deadRedis, "--fail-mode", tt.mode, "--log-format", "text")
			eventually(t, 10*time.Second, "the gateway to listen", func() bool { return httpStatus("http://"+admin+"/healthz") == 200 })
			if got := httpStatus("http://" + admin + "/readyz"); got != http.StatusServiceUnavailable {
				t.Errorf("/readyz = %d before Redis was ever reached", got)
			}
			if got := httpStatus("http://" + addr + "/health"); got != tt.want {
				t.Errorf("fail-mode %s: %d, want %d", tt.mode, got, tt.want)
			}
		})
	}
}

// With --tls-cert-file the gateway serves HTTPS and HTTP/2, and blocks
// there as on plain HTTP; a certificate renewed on disk is served without
// a restart.
func TestTheGatewayServesHTTPSAndHTTP2(t *testing.T) {
	ca := testcert.New(t, "gateway")
	certFile, keyFile := ca.Issue(t, "gateway-1")
	s := newStack(t, stackOptions{ttl: "300s", direct: true, gwArgs: []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile}})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	var served atomic.Value
	conf := &tls.Config{RootCAs: roots, VerifyConnection: func(cs tls.ConnectionState) error {
		served.Store(cs.PeerCertificates[0].Subject.CommonName)
		return nil
	}}
	s.gateway = strings.Replace(s.gateway, "http://", "https://", 1)
	s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}}
	if a := s.request("203.0.113.195", "GET", "/health", ""); a.status != http.StatusOK || a.proto != "HTTP/2.0" {
		t.Fatalf("over HTTPS: %d %s, want 200 over HTTP/2", a.status, a.proto)
	}
	for range 5 {
		s.login("203.0.113.195", "guess")
	}
	if a := s.awaitBlocked("203.0.113.195"); a.proto != "HTTP/2.0" {
		t.Errorf("refused over %s", a.proto)
	}

	newCert, newKey := ca.Issue(t, "gateway-2")
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, _ := os.ReadFile(f[0])
		os.WriteFile(f[1], b, 0o600)
	}
	eventually(t, 10*time.Second, "the renewed certificate to be served", func() bool {
		s.client.CloseIdleConnections() // a new handshake
		s.request("203.0.113.196", "GET", "/health", "")
		return served.Load() == "gateway-2"
	})
}

package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"

	"github.com/authguard/authguard/e2e/testcert"
)

// statusKB reads a kB figure of a process from /proc (VmRSS: its resident
// set, VmHWM: the peak of it).
func statusKB(t testing.TB, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no " + field)
	return 0
}

// A 9-byte push whose snappy header claims 4 GiB took 23 s and 4.3 GB of
// memory (the shipped limit is 1 GiB); a 2.9 MB body expands to 60 MiB.
// Both are refused with 413, and the daemon's memory hardly moves.
func TestDecompressionBombsDoNotMoveTheDaemonsMemory(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true})
	pid := s.daemon.cmd.Process.Pid
	before := statusKB(t, pid, "VmRSS")
	for _, body := range [][]byte{{0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0}, snappy.Encode(nil, make([]byte, 60<<20))} {
		// With the token: a gateway's credentials in an attacker's hands.
		if code := s.pushAnswer(t, s.token(t), "", "application/x-protobuf", body); code != http.StatusRequestEntityTooLarge {
			t.Errorf("a %d-byte bomb: %d, want 413", len(body), code)
		}
	}
	grew := statusKB(t, pid, "VmRSS") - before
	t.Logf("the daemon's RSS grew by %d kB (a -race build)", grew)
	if grew > 20<<10 {
		t.Errorf("the daemon's RSS grew by %d MiB", grew>>10)
	}
}

// token is the push receiver's token (direct mode).
func (s *stack) token(t *testing.T) string {
	b, err := os.ReadFile(s.pushToken)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return first
}

// pushAnswer posts a push body to the daemon's receiver with a bearer
// token and a tenant ("" for none) and returns the status it answered.
func (s *stack) pushAnswer(t *testing.T, token, tenant, contentType string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.pushAt+"/loki/api/v1/push", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if tenant != "" {
		req.Header.Set("X-Scope-OrgID", tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Anyone who could reach the daemon's push receiver could have any address
// blocked with five lines (the fail2ban log-injection class). A push
// without the token, or with a wrong or rotated-out one, is refused with
// 401 and changes nothing; the gateway's pushes, with the token, count.
func TestOnlyAuthenticatedPushesCount(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true})
	victim := "198.51.100.77"
	body := fiveFailures(victim)
	for _, token := range []string{"", "wrong-token", "e2e-push-token-but-longer"} {
		if code := s.pushAnswer(t, token, "", "application/json", body); code != http.StatusUnauthorized {
			t.Errorf("a push with token %q: %d, want 401", token, code)
		}
	}
	// The gateway's own pushes carry the token: its attacker is blocked.
	for range 5 {
		s.login("203.0.113.190", "guess")
	}
	s.awaitBlocked("203.0.113.190")
	if a := s.request(victim, "GET", "/health", ""); a.status != http.StatusOK {
		t.Fatalf("the victim of the forged pushes is refused: %d", a.status)
	}
	if n := s.metric(`authguard_push_requests_total{code="401"}`); n != 3 {
		t.Errorf("%v pushes answered 401, want 3", n)
	}
	// The push lag: the gateway's five lines, each from its timestamp to
	// the receiver, well inside the promise (the gateway batches pushes).
	if n, sum := s.metric("authguard_push_delay_seconds_count"), s.metric("authguard_push_delay_seconds_sum"); n != 5 || sum/n > 1 {
		t.Errorf("push delay: %v entries, %.3f s on average; want the gateway's 5, under 1 s each", n, sum/n)
	}

	answers := func(token string, want int) func() bool {
		return func() bool { return s.pushAnswer(t, token, "", "application/json", []byte(`{"streams":[]}`)) == want }
	}
	// Rotation: the new token first, the old one still taken...
	os.WriteFile(s.pushToken, []byte("e2e-push-token-2\ne2e-push-token\n"), 0o600)
	eventually(t, 10*time.Second, "the new token to be taken", answers("e2e-push-token-2", http.StatusNoContent))
	// ...then the old one is rotated out, and refused.
	os.WriteFile(s.pushToken, []byte("e2e-push-token-2\n"), 0o600)
	eventually(t, 10*time.Second, "the rotated-out token to be refused", answers("e2e-push-token", http.StatusUnauthorized))
	// The gateway reads its token file for each push and follows.
	for range 5 {
		s.login("203.0.113.191", "guess")
	}
	s.awaitBlocked("203.0.113.191")
}

// Each audience sees only its endpoints: pushes are not taken on the admin
// listener, and /-/reload is on none of the push and Slack listeners (nor
// on admin without --enable-lifecycle).
func TestListenersServeOnlyTheirAudience(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "signing-secret")
	os.WriteFile(secretFile, []byte("e2e-signing-secret\n"), 0o600)
	slackAt := freeAddr(t)
	s := newStack(t, stackOptions{ttl: "300s", direct: true, dArgs: []string{"--slack-signing-secret-file", secretFile, "--slack-listen", slackAt}})
	for _, tt := range []struct{ name, method, url string }{
		{"a push on the admin listener", "POST", "http://" + s.daemonAt + "/loki/api/v1/push"},
		{"/-/reload on the admin listener without --enable-lifecycle", "POST", "http://" + s.daemonAt + "/-/reload"},
		{"/-/reload on the push listener", "POST", "http://" + s.pushAt + "/-/reload"},
		{"/-/reload on the Slack listener", "POST", "http://" + slackAt + "/-/reload"},
		{"/metrics on the push listener", "GET", "http://" + s.pushAt + "/metrics"},
		{"/metrics on the Slack listener", "GET", "http://" + slackAt + "/metrics"},
		{"Slack's interactions on the admin listener", "POST", "http://" + s.daemonAt + "/slack/interactions"},
		{"Slack's interactions on the push listener", "POST", "http://" + s.pushAt + "/slack/interactions"},
	} {
		req, _ := http.NewRequest(tt.method, tt.url, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", tt.name, resp.StatusCode)
		}
	}
}

// With --push-tenant a push must also name the tenant, as Loki's
// multi-tenant push does.
func TestPushesMustNameTheTenantWhenOneIsSet(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true, dArgs: []string{"--push-tenant", "team-a"}, gwArgs: []string{"--loki-tenant", "team-a"}})
	for _, tenant := range []string{"", "team-b"} {
		if code := s.pushAnswer(t, s.token(t), tenant, "application/json", []byte(`{"streams":[]}`)); code != http.StatusUnauthorized {
			t.Errorf("a push with the token and tenant %q: %d, want 401", tenant, code)
		}
	}
	for range 5 {
		s.login("203.0.113.192", "guess")
	}
	s.awaitBlocked("203.0.113.192")
}

// fiveFailures is a push body of five failed logins of ip, in Loki's JSON.
func fiveFailures(ip string) []byte {
	var at []time.Time
	for i := range 5 {
		at = append(at, time.Now().Add(time.Duration(i)))
	}
	return failuresAt(ip, at)
}

// failuresAt is a push body, in Loki's JSON, of a failed login of ip at
// each of at.
func failuresAt(ip string, at []time.Time) []byte {
	var values []string
	for _, t := range at {
		values = append(values, fmt.Sprintf(`["%d","{\"action\":\"auth_failed\",\"client_ip\":\"%s\"}"]`, t.UnixNano(), ip))
	}
	return []byte(`{"streams":[{"stream":{"service":"audit"},"values":[` + strings.Join(values, ",") + `]}]}`)
}

// With mutual TLS the push receiver takes pushes only over connections
// whose client certificate its CA signed: the gateway's, with the same
// --loki-tls-* flags the daemon has for Loki. A client without one, with
// one from another CA, or speaking plain HTTP, gets nothing in.
func TestPushesOverMutualTLSNeedTheClientCA(t *testing.T) {
	ca, other := testcert.New(t, "push"), testcert.New(t, "other")
	srvCert, srvKey := ca.Issue(t, "daemon")
	gwCert, gwKey := ca.Issue(t, "gateway")
	strangerCert, strangerKey := other.Issue(t, "stranger")
	s := newStack(t, stackOptions{ttl: "300s", direct: true, pushHTTPS: true,
		pushD:  []string{"--push-tls-cert-file", srvCert, "--push-tls-key-file", srvKey, "--push-tls-client-ca-file", ca.File},
		pushGW: []string{"--loki-tls-ca-file", ca.File, "--loki-tls-cert-file", gwCert, "--loki-tls-key-file", gwKey}})
	victim := "198.51.100.78"
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	stranger, err := tls.LoadX509KeyPair(strangerCert, strangerKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, client := range map[string]*http.Client{
		"no client certificate":    {Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
		"another CA's certificate": {Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{stranger}}}},
	} {
		resp, err := client.Post("https://"+s.pushAt+"/loki/api/v1/push", "application/json", bytes.NewReader(fiveFailures(victim)))
		if err == nil {
			resp.Body.Close()
			t.Errorf("a push with %s was answered %d; the handshake should fail", name, resp.StatusCode)
		}
	}
	resp, err := http.Post("http://"+s.pushAt+"/loki/api/v1/push", "application/json", bytes.NewReader(fiveFailures(victim)))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a plain-HTTP push to the TLS listener: %d, want 400", resp.StatusCode)
		}
	}
	for range 5 {
		s.login("203.0.113.193", "guess")
	}
	s.awaitBlocked("203.0.113.193")
	if a := s.request(victim, "GET", "/health", ""); a.status != http.StatusOK {
		t.Fatalf("the victim of the refused pushes is refused: %d", a.status)
	}
	if n := s.metric(`authguard_push_requests_total{code="204"}`); n < 1 {
		t.Errorf("%v pushes taken, want the gateway's", n)
	}
}

// Basic auth: "USER:PASSWORD" lines, the gateway sending its user with
// --loki-username and --loki-password-file; a wrong password is 401.
func TestBasicAuthPushesCount(t *testing.T) {
	dir := t.TempDir()
	users, password := filepath.Join(dir, "users"), filepath.Join(dir, "password")
	os.WriteFile(users, []byte("# rotating the shipper\nshipper:old-secret\ngateway:gw-secret-1\n"), 0o600)
	os.WriteFile(password, []byte("gw-secret-1\n"), 0o600)
	s := newStack(t, stackOptions{ttl: "300s", direct: true,
		pushD:  []string{"--push-basic-auth-file", users},
		pushGW: []string{"--loki-username", "gateway", "--loki-password-file", password}})
	victim := "198.51.100.79"
	for _, cred := range [][2]string{{"gateway", "wrong"}, {"shipper", "gw-secret-1"}, {"", ""}} {
		req, _ := http.NewRequest("POST", "http://"+s.pushAt+"/loki/api/v1/push", bytes.NewReader(fiveFailures(victim)))
		req.Header.Set("Content-Type", "application/json")
		if cred[0] != "" {
			req.SetBasicAuth(cred[0], cred[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a push as %q/%q: %d, want 401", cred[0], cred[1], resp.StatusCode)
		}
	}
	for range 5 {
		s.login("203.0.113.194", "guess")
	}
	s.awaitBlocked("203.0.113.194")
	if a := s.request(victim, "GET", "/health", ""); a.status != http.StatusOK {
		t.Fatalf("the victim of the refused pushes is refused: %d", a.status)
	}
}

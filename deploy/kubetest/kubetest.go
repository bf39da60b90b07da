// Package kubetest starts a real etcd and kube-apiserver on loopback for
// the tests that need a Kubernetes API server (make test-real), from the
// binaries in $AUTHGUARD_TEST_TOOLS, envtest-style: no kubelet, no
// controllers, RBAC on, an admin token in system:masters and a service
// account signing key so that TokenRequest issues real tokens.
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authguard/authguard/e2e/testtools"
	"k8s.io/client-go/rest"
)

// Server is a running API server.
type Server struct {
	// URL is the API server's https address; CAFile its self-signed
	// serving certificate, to trust.
	URL, CAFile string
	// Admin is a client config with the admin token (system:masters).
	Admin *rest.Config
	dir   string
}

// Start runs etcd and kube-apiserver in t's temporary directory until t
// ends, and returns once the API server answers /readyz. It fails t when
// $AUTHGUARD_TEST_TOOLS does not hold the binaries: a test that needs
// them is not counted as passing without them.
func Start(t testing.TB) *Server {
	t.Helper()
	tools, err := testtools.Dir("etcd.gz", "kube-apiserver.gz")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	etcd, err := testtools.Unpack(filepath.Join(tools, "etcd.gz"), bin)
	if err != nil {
		t.Fatal(err)
	}
	apiserver, err := testtools.Unpack(filepath.Join(tools, "kube-apiserver.gz"), bin)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := testtools.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(t, dir)
	token := randomToken(t)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	etcdExited := run(t, dir, "etcd", etcd, "--name", "t", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "t="+peer,
		"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2]))
	apiExited := run(t, dir, "kube-apiserver", apiserver, "--etcd-servers="+client,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[3]), "--advertise-address=127.0.0.1",
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--authorization-mode=RBAC", "--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--service-cluster-ip-range=10.0.0.0/24",
		// A loopback advertise address is refused without this.
		"--endpoint-reconciler-type=none")
	s := &Server{URL: fmt.Sprintf("https://127.0.0.1:%d", ports[3]), CAFile: filepath.Join(dir, "certs", "apiserver.crt"), dir: dir}
	s.awaitReady(t, token, map[string]<-chan struct{}{"etcd": etcdExited, "kube-apiserver": apiExited})
	s.Admin = s.Config(token)
	return s
}

// Config is a client config for the API server with token.
func (s *Server) Config(token string) *rest.Config {
	return &rest.Config{Host: s.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: s.CAFile}}
}

// Kubeconfig writes a kubeconfig file for the API server with token, as a
// process outside the cluster uses it, and returns its path.
func (s *Server) Kubeconfig(t testing.TB, token string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: test, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`, s.URL, s.CAFile, token)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// awaitReady waits for the serving certificate and a 200 from /readyz,
// and fails at once when a server exits.
func (s *Server) awaitReady(t testing.TB, token string, exited map[string]<-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		for name, ch := range exited {
			select {
			case <-ch:
				t.Fatalf("%s exited before the API server was ready; its log:\n%s", name, tail(filepath.Join(s.dir, name+".log")))
			default:
			}
		}
		if _, err := os.Stat(s.CAFile); err == nil {
			cfg := s.Config(token)
			hc, err := rest.HTTPClientFor(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, s.URL+"/readyz", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := hc.Do(req); err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
				last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			} else {
				last = err.Error()
			}
			hc.CloseIdleConnections()
		}
		time.Sleep(200 * time.Millisecond) // polling a process we do not control
	}
	t.Fatalf("kube-apiserver not ready after 90 s (last answer: %s); its log:\n%s", last, tail(filepath.Join(s.dir, "kube-apiserver.log")))
}

// run starts a server whose output goes to DIR/NAME.log, stopped when t
// ends; its log is shown when t failed. The channel closes when it exits.
func run(t testing.TB, dir, name, bin string, args ...string) <-chan struct{} {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", name, tail(logPath))
		}
	})
	return exited
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// writeKeys writes the service account signing key pair.
func writeKeys(t testing.TB, dir string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"sa.key": {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)},
		"sa.pub": {Type: "PUBLIC KEY", Bytes: pub},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func randomToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

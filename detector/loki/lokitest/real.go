package lokitest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/authguard/authguard/e2e/testtools"
)

// Real is a real Loki binary running on loopback in a temporary directory,
// for the tests that must not rely on the fake (make test-real).
type Real struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Tenant is the X-Scope-OrgID the tests use (auth_enabled is on).
	Tenant string

	bin, dir, config string
	mu               sync.Mutex
	cmd              *exec.Cmd
	done             chan struct{}
	log              bytes.Buffer
}

// StartReal decompresses $AUTHGUARD_TEST_TOOLS/loki.gz into dir, writes its
// config with free loopback ports, starts it there (this build writes its
// chunks relative to its working directory) and waits until /ready answers
// 200 (about 15 s).
func StartReal(dir string) (*Real, error) {
	tools, err := testtools.Dir("loki.gz", "loki-config.yaml")
	if err != nil {
		return nil, err
	}
	bin, err := testtools.Unpack(filepath.Join(tools, "loki.gz"), dir)
	if err != nil {
		return nil, fmt.Errorf("real loki: %w", err)
	}
	r := &Real{Tenant: "authguard-test", dir: dir, bin: bin, config: filepath.Join(dir, "loki.yaml")}
	tmpl, err := os.ReadFile(filepath.Join(tools, "loki-config.yaml"))
	if err != nil {
		return nil, err
	}
	ports, err := testtools.FreePorts(2)
	if err != nil {
		return nil, err
	}
	httpPort, grpcPort := ports[0], ports[1]
	conf := strings.NewReplacer("HTTP_PORT", strconv.Itoa(httpPort), "GRPC_PORT", strconv.Itoa(grpcPort), "LOKI_DIR", dir).Replace(string(tmpl))
	if err := os.WriteFile(r.config, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	r.URL = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	if err := r.Start(); err != nil {
		return nil, err
	}
	return r, nil
}

// Start starts the binary (again, after Stop: it keeps what it stored) and
// waits for /ready.
func (r *Real) Start() error {
	if err := r.Launch(); err != nil {
		return err
	}
	return r.AwaitReady()
}

// Launch starts the binary and returns at once: it answers 503 "Ingester
// not ready" for about 15 s.
func (r *Real) Launch() error {
	r.mu.Lock()
	cmd := exec.Command(r.bin, "-config.file="+r.config)
	cmd.Dir = r.dir
	cmd.Stdout, cmd.Stderr = &lockedWriter{r}, &lockedWriter{r}
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		return fmt.Errorf("real loki: %w", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	done := r.done
	r.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	return nil
}

// AwaitReady waits until /ready answers 200.
func (r *Real) AwaitReady() error {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(r.URL + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("real loki exited at start:\n%s", r.Log())
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("real loki not ready after 90 s")
		}
	}
}

// Stop sends SIGTERM and waits for the process to end (2-10 s).
func (r *Real) Stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Stopping sends SIGTERM and returns at once; Wait then waits for the end.
func (r *Real) Stopping() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// Wait waits for the process to end.
func (r *Real) Wait() {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Log is what the binary printed.
func (r *Real) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

type lockedWriter struct{ r *Real }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if w.r.log.Len() > 8<<20 { // keep the newest part of a long log
		w.r.log.Reset()
	}
	return w.r.log.Write(b)
}

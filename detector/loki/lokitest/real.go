package lokitest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ToolsEnv names the directory holding loki.gz and loki-config.yaml (the
// project's CI sets it to shared/tools).
const ToolsEnv = "AUTHGUARD_TEST_TOOLS"

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
	tools := os.Getenv(ToolsEnv)
	if tools == "" {
		return nil, fmt.Errorf("%s is not set: it must name the directory holding loki.gz and loki-config.yaml (../shared/tools)", ToolsEnv)
	}
	r := &Real{Tenant: "authguard-test", dir: dir, bin: filepath.Join(dir, "loki"), config: filepath.Join(dir, "loki.yaml")}
	if err := gunzip(filepath.Join(tools, "loki.gz"), r.bin); err != nil {
		return nil, err
	}
	tmpl, err := os.ReadFile(filepath.Join(tools, "loki-config.yaml"))
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	grpcPort, err := freePort()
	if err != nil {
		return nil, err
	}
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

func gunzip(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("real loki: %w", err)
	}
	defer in.Close()
	z, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("real loki %s: %w", from, err)
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, z); err != nil {
		out.Close()
		return fmt.Errorf("real loki %s: %w", from, err)
	}
	return out.Close()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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

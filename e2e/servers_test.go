package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Slow-body and idle connections are held no longer than their timeouts,
// on the gateway's proxy port and the daemon's listener, while a normal
// client is served throughout.
func TestSlowAndIdleConnectionsAreClosedWhileClientsAreServed(t *testing.T) {
	limits := []string{"--http-read-header-timeout", "2s", "--http-idle-timeout", "2s", "--http-read-timeout", "2s"}
	s := newStack(t, stackOptions{ttl: "300s", direct: true,
		gwArgs: append([]string{"--http-body-progress-timeout", "2s"}, limits...), dArgs: limits})
	gw := strings.TrimPrefix(s.gateway, "http://")
	slowBody := "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"username\":"
	slowPush := "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
	var conns []net.Conn
	open := func(addr, send string, n int) {
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			if send != "" {
				io.WriteString(c, send)
			}
			conns = append(conns, c)
		}
	}
	opened := time.Now()
	open(gw, "", 3000)
	open(gw, slowBody, 500)
	open(s.daemonAt, "", 300)
	open(s.pushAt, slowPush, 100)
	// Keep-alive connections that made one request and then sit idle.
	open(gw, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 300)
	open(s.daemonAt, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 100)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// A normal client is served while they hang on.
	for i := range 5 {
		if a := s.login("198.51.100.40", "correct horse"); a.status != 200 {
			t.Fatalf("normal login %d among %d held connections: %d", i, len(conns), a.status)
		}
	}
	// Every held connection is closed by the server (a read ends) well
	// before our own deadline.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stillOpen []string
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(opened.Add(20 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				mu.Lock()
				stillOpen = append(stillOpen, fmt.Sprintf("#%d to %s", i, c.RemoteAddr()))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(stillOpen) > 0 {
		t.Errorf("%d of %d connections still open after 20 s: %v", len(stillOpen), len(conns), stillOpen[:min(5, len(stillOpen))])
	}
	if a := s.login("198.51.100.40", "correct horse"); a.status != 200 {
		t.Errorf("normal login afterwards: %d", a.status)
	}
}

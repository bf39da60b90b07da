package gateway

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/blockset"

	"github.com/gorilla/websocket"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func blockedList(ips ...string) *Blocklist {
	bl := NewBlocklist()
	m := map[netip.Prefix]time.Time{}
	for _, ip := range ips {
		m[blockset.Host(netip.MustParseAddr(ip))] = time.Now().Add(time.Hour)
	}
	bl.replace(m)
	return bl
}

func TestForwardAuthAnswers200Or403(t *testing.T) {
	g := New(Options{Blocklist: blockedList("203.0.113.7"), Log: quietLog(),
		ClientIP: ClientIPResolver{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	for _, tt := range []struct {
		name, path, client string
		want               int
	}{
		{"nginx auth_request for a blocked client", "/authz", "203.0.113.7", 403},
		{"Traefik ForwardAuth for another client", "/", "198.51.100.1", 200},
		{"Envoy ext_authz prefixes the original path", "/authz/api/v1/auth/login", "203.0.113.7", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.path, nil)
			r.RemoteAddr = "10.0.0.5:4444" // the proxy in front
			r.Header.Set("X-Forwarded-For", tt.client)
			w := httptest.NewRecorder()
			g.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("status %d, want %d", w.Code, tt.want)
			}
			if tt.want == 403 && !strings.Contains(w.Body.String(), "AUTH_004") {
				t.Errorf("body %q", w.Body)
			}
		})
	}
}

type fakeMiss struct{ blocked map[netip.Addr]bool }

func (f fakeMiss) BlockedNow(_ context.Context, ip netip.Addr) (bool, time.Time, error) {
	return f.blocked[ip], time.Now().Add(time.Minute), nil
}

func TestCheckRedisOnMissEnforcesAtOnceAndRemembers(t *testing.T) {
	ip := netip.MustParseAddr("203.0.113.9")
	g := New(Options{Blocklist: blockedList(), Log: quietLog(), MissCheck: fakeMiss{map[netip.Addr]bool{ip: true}}})
	if v, left := g.Check(context.Background(), ip, time.Now()); v != Blocked || left <= 0 {
		t.Fatalf("verdict %v left %v", v, left)
	}
	if blocked, _ := g.opts.Blocklist.Blocked(ip, time.Now()); !blocked {
		t.Error("the look-up was not remembered locally")
	}
	if v, _ := g.Check(context.Background(), netip.MustParseAddr("198.51.100.1"), time.Now()); v != Allowed {
		t.Errorf("an unblocked client: %v", v)
	}
}

func proxyTo(t *testing.T, upstream http.Handler) (*httptest.Server, *Gateway) {
	app := httptest.NewServer(upstream)
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	g := New(Options{Upstream: u, Blocklist: blockedList(), Log: quietLog(), Audit: &memSink{}})
	srv := httptest.NewUnstartedServer(g)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, g
}

func TestWebsocketsPassThrough(t *testing.T) {
	up := websocket.Upgrader{}
	srv, _ := proxyTo(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte("echo: "), msg...))
		}
	}))
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("hi"))
	_, msg, err := c.ReadMessage()
	if err != nil || string(msg) != "echo: hi" {
		t.Fatalf("got %q, %v", msg, err)
	}
}

func TestResponsesStreamThrough(t *testing.T) {
	release := make(chan struct{})
	srv, _ := proxyTo(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	}))
	defer close(release)
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk %q, %v: the gateway buffered the stream", line, err)
	}
}

func TestHTTP2ClientsPassThrough(t *testing.T) {
	srv, _ := proxyTo(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("proto %s status %d", resp.Proto, resp.StatusCode)
	}
}

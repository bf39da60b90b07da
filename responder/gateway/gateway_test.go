package gateway

import (
	"encoding/json"
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
)

var trusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}

func TestClientIPFromXForwardedFor(t *testing.T) {
	tests := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"an untrusted peer is the client, whatever it claims", "203.0.113.7:5555", []string{"198.51.100.1"}, "203.0.113.7"},
		{"a trusted proxy forwards the client", "10.0.0.2:80", []string{"203.0.113.7"}, "203.0.113.7"},
		{"the right-most untrusted hop wins over a spoofed left part", "10.0.0.2:80", []string{"1.2.3.4, 203.0.113.7, 10.0.0.9"}, "203.0.113.7"},
		{"hops across several headers are one list", "10.0.0.2:80", []string{"1.2.3.4", "203.0.113.7, 10.1.1.1"}, "203.0.113.7"},
		{"a malformed hop stops the walk at the last trusted address", "10.0.0.2:80", []string{"203.0.113.7, garbage, 10.0.0.9"}, "10.0.0.9"},
		{"all hops trusted: the left-most", "10.0.0.2:80", []string{"10.0.0.3, 10.0.0.4"}, "10.0.0.3"},
		{"no header from a trusted peer: the peer", "10.0.0.2:80", nil, "10.0.0.2"},
		{"an IPv4-mapped peer is normalised", "[::ffff:203.0.113.7]:5555", nil, "203.0.113.7"},
		{"an IPv6 client behind an IPv6 proxy", "[fd00::1]:80", []string{"2001:db8::7"}, "2001:db8::7"},
		{"a mapped hop is normalised", "10.0.0.2:80", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"a hop with a zone is malformed", "10.0.0.2:80", []string{"fe80::1%eth0"}, "10.0.0.2"},
		{"an empty header from a trusted peer: the peer", "10.0.0.2:80", []string{""}, "10.0.0.2"},
		{"hundreds of trusted hops stop at the bound", "10.0.0.2:80", []string{strings.Repeat("10.0.0.1,", 500) + "10.0.0.1"}, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			for _, h := range tt.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			if got := (ClientIPResolver{Trusted: trusted}).Resolve(r); got.String() != tt.want {
				t.Errorf("ClientIP = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClientIPFromForwardedAndXRealIP(t *testing.T) {
	tests := []struct {
		name, header, peer, value, want string
	}{
		{"Forwarded names the client", HeaderForwarded, "10.0.0.2:80", "for=203.0.113.7;proto=https", "203.0.113.7"},
		{"Forwarded with a quoted IPv6 and port", HeaderForwarded, "10.0.0.2:80", `for="[2001:db8:cafe::17]:4711"`, "2001:db8:cafe::17"},
		{"Forwarded with an IPv4 and port", HeaderForwarded, "10.0.0.2:80", `for="203.0.113.7:4711";by=10.0.0.2`, "203.0.113.7"},
		{"Forwarded right-most untrusted element wins", HeaderForwarded, "10.0.0.2:80", "for=1.2.3.4, for=203.0.113.7, for=10.0.0.3", "203.0.113.7"},
		{"Forwarded For= is case-insensitive", HeaderForwarded, "10.0.0.2:80", "For=203.0.113.7", "203.0.113.7"},
		{"an obfuscated Forwarded node stops the walk", HeaderForwarded, "10.0.0.2:80", "for=_hidden, for=10.0.0.3", "10.0.0.3"},
		{"Forwarded from an untrusted peer is ignored", HeaderForwarded, "198.51.100.9:80", "for=203.0.113.7", "198.51.100.9"},
		{"a quoted comma does not split a Forwarded element", HeaderForwarded, "10.0.0.2:80", `for=203.0.113.7, for="198.51.100.1,10.0.0.3"`, "10.0.0.2"},
		{"a quoted semicolon does not split a Forwarded pair", HeaderForwarded, "10.0.0.2:80", `for=203.0.113.7;host="a;for=10.0.0.3"`, "203.0.113.7"},
		{"two for= in one element are malformed", HeaderForwarded, "10.0.0.2:80", `for=203.0.113.7, for=198.51.100.1;for=10.0.0.3`, "10.0.0.2"},
		{"an unclosed quote is malformed", HeaderForwarded, "10.0.0.2:80", `for=203.0.113.7, for="10.0.0.3`, "10.0.0.2"},
		{"a quoted-pair in a Forwarded value", HeaderForwarded, "10.0.0.2:80", `for="203.0.113.\7"`, "203.0.113.7"},
		{"X-Real-IP from a trusted peer", HeaderXRealIP, "10.0.0.2:80", "203.0.113.7", "203.0.113.7"},
		{"X-Real-IP from an untrusted peer is ignored", HeaderXRealIP, "198.51.100.9:80", "203.0.113.7", "198.51.100.9"},
		{"a malformed X-Real-IP: the peer", HeaderXRealIP, "10.0.0.2:80", "nonsense", "10.0.0.2"},
		{"X-Forwarded-For is not read in Forwarded mode", HeaderForwarded, "10.0.0.2:80", "", "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			r.Header.Set("X-Forwarded-For", "198.51.100.200")
			if tt.value != "" {
				r.Header.Set(tt.header, tt.value)
			}
			if got := (ClientIPResolver{Trusted: trusted, Header: tt.header}).Resolve(r); got.String() != tt.want {
				t.Errorf("client = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUsernameFromBody(t *testing.T) {
	for _, tt := range []struct{ ct, body, want string }{
		{"application/json", `{"username":"alice","password":"hunter2"}`, "alice"},
		{"application/json; charset=utf-8", `{"username":"bob"}`, "bob"},
		{"application/x-www-form-urlencoded", `username=carol&password=x`, "carol"},
		{"application/json", `{"username":42}`, ""},
		{"application/json", `not json`, ""},
		{"text/plain", `username=dave`, ""},
	} {
		if got := UsernameFromBody(tt.ct, []byte(tt.body), "username"); got != tt.want {
			t.Errorf("UsernameFromBody(%q, %q) = %q, want %q", tt.ct, tt.body, got, tt.want)
		}
	}
}

type memSink struct{ lines []string }

func (m *memSink) Audit(_ time.Time, line []byte) { m.lines = append(m.lines, string(line)) }

func newTestGateway(t *testing.T, failClosed bool) (*Gateway, *Blocklist, *memSink) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/auth/login" && !strings.Contains(string(body), "correct") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok "+string(body))
	}))
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	bl := NewBlocklist()
	sink := &memSink{}
	g := New(Options{Upstream: u, Blocklist: bl, Audit: sink, FailClosed: failClosed, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return g, bl, sink
}

func TestBlockedClientsGet403AUTH004OnEveryPath(t *testing.T) {
	g, bl, _ := newTestGateway(t, false)
	bl.replace(map[netip.Prefix]time.Time{blockset.Host(netip.MustParseAddr("203.0.113.7")): time.Now().Add(90 * time.Second)})
	for _, target := range []string{"POST /api/v1/auth/login", "GET /health", "POST /auth/login"} {
		method, path, _ := strings.Cut(target, " ")
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = "203.0.113.7:4000"
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		var body apiError
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != 403 || body.Error.Code != "AUTH_004" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", target, w.Code, w.Body)
		}
		if ra := w.Header().Get("Retry-After"); ra != "90" && ra != "89" {
			t.Errorf("%s: Retry-After %q", target, ra)
		}
	}
	r := httptest.NewRequest("GET", "/health", nil)
	r.RemoteAddr = "198.51.100.1:4000"
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("another client got %d", w.Code)
	}
}

func TestExpiredBlocksNoLongerApply(t *testing.T) {
	g, bl, _ := newTestGateway(t, false)
	bl.replace(map[netip.Prefix]time.Time{blockset.Host(netip.MustParseAddr("203.0.113.7")): time.Now().Add(-time.Second)})
	r := httptest.NewRequest("GET", "/health", nil)
	r.RemoteAddr = "203.0.113.7:4000"
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("expired block still enforced: %d", w.Code)
	}
}

func TestLoginResponsesAreAudited(t *testing.T) {
	g, bl, sink := newTestGateway(t, false)
	bl.replace(nil)
	login := func(body string) int {
		r := httptest.NewRequest("POST", "/auth/login", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("User-Agent", "curl/8")
		r.RemoteAddr = "203.0.113.7:4000"
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w.Code
	}
	if code := login(`{"username":"alice","password":"wrong"}`); code != 401 {
		t.Fatalf("wrong password got %d", code)
	}
	if code := login(`{"username":"alice","password":"correct"}`); code != 200 {
		t.Fatalf("right password got %d", code)
	}
	if len(sink.lines) != 2 {
		t.Fatalf("audit lines %q", sink.lines)
	}
	var ev AuditEvent
	json.Unmarshal([]byte(sink.lines[0]), &ev)
	if ev.Action != "auth_failed" || ev.ClientIP != "203.0.113.7" || ev.Username != "alice" || ev.Service != "audit" || ev.Status != 401 || ev.Path != "/auth/login" || ev.UserAgent != "curl/8" {
		t.Errorf("audit line %s", sink.lines[0])
	}
	if strings.Contains(sink.lines[0], "wrong") {
		t.Error("the password leaked into the audit line")
	}
	json.Unmarshal([]byte(sink.lines[1]), &ev)
	if ev.Action != "auth_succeeded" {
		t.Errorf("audit line %s", sink.lines[1])
	}
}

func TestFailMode(t *testing.T) {
	closed, _, _ := newTestGateway(t, true)
	open, _, _ := newTestGateway(t, false)
	for _, tt := range []struct {
		g    *Gateway
		want int
	}{{closed, 503}, {open, 200}} {
		r := httptest.NewRequest("GET", "/health", nil)
		w := httptest.NewRecorder()
		tt.g.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("before the first load: %d, want %d", w.Code, tt.want)
		}
	}
}

func TestEventsWinOverAnOlderScan(t *testing.T) {
	bl := NewBlocklist()
	ip := netip.MustParseAddr("203.0.113.7")
	gen := bl.beginPass()
	// A block arrives by the changes stream while the SCAN, which missed it, runs.
	bl.apply(blockset.Event{Op: "block", IP: ip.String(), ExpiresMS: time.Now().Add(time.Minute).UnixMilli()})
	bl.endPass(gen)
	if blocked, _ := bl.Blocked(ip, time.Now()); !blocked {
		t.Error("a reconcile undid a newer block event")
	}
	bl.replace(map[netip.Prefix]time.Time{})
	if blocked, _ := bl.Blocked(ip, time.Now()); blocked {
		t.Error("a block deleted by hand survived a reconcile")
	}
}

func TestAnUnblockDuringAPassIsNotUndoneByIt(t *testing.T) {
	bl := NewBlocklist()
	ip := netip.MustParseAddr("203.0.113.8")
	bl.replace(map[netip.Prefix]time.Time{blockset.Host(ip): time.Now().Add(time.Hour)})
	gen := bl.beginPass()
	bl.apply(blockset.Event{Op: "unblock", IP: ip.String()})
	bl.mark(blockset.Host(ip), time.Now().Add(time.Hour), true) // the SCAN read the key before the unblock deleted it
	bl.endPass(gen)
	if blocked, _ := bl.Blocked(ip, time.Now()); blocked {
		t.Error("a pass undid an unblock that came while it ran")
	}
}

// An application whose router ignores case and a trailing slash (Express,
// Rails, Spring) answers 401 to every spelling of its login route; the
// gateway audits each of them.
func TestEverySpellingOfTheLoginRouteIsAudited(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if RoutePath(r.URL.Path, false) == "/auth/login" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	sink := &memSink{}
	g := New(Options{Upstream: u, Blocklist: NewBlocklist(), Audit: sink, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g.opts.Blocklist.replace(nil)
	for _, tt := range []struct {
		method, target string
		audited        bool
	}{
		{"POST", "/auth/login", true},
		{"POST", "/auth/login/", true},
		{"POST", "/AUTH/LOGIN", true},
		{"POST", "/Auth/Login", true},
		{"POST", "/auth/login%2F", true},
		{"POST", "/auth/%6Cogin", true},
		{"POST", "//auth//login", true},
		{"POST", "/auth/./login", true},
		{"POST", "/x/../auth/login", true},
		{"POST", "/auth/login;jsessionid=1", true},
		{"post", "/auth/login", true},
		{"POST", "/auth/login-help", false},
		{"POST", "/auth/loginx", false},
		{"GET", "/auth/login", false},
	} {
		before := len(sink.lines)
		r := httptest.NewRequest("POST", "/", strings.NewReader(`{"username":"alice","password":"x"}`))
		r.Method = tt.method
		r.URL, _ = url.ParseRequestURI(tt.target) // as net/http reads a request target
		r.RequestURI = tt.target
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "203.0.113.7:4000"
		g.ServeHTTP(httptest.NewRecorder(), r)
		if audited := len(sink.lines) > before; audited != tt.audited {
			t.Errorf("%s %s: audited %v, want %v", tt.method, tt.target, audited, tt.audited)
		}
		if tt.audited && len(sink.lines) > before && !strings.Contains(sink.lines[before], `"action":"auth_failed"`) {
			t.Errorf("%s %s: %s", tt.method, tt.target, sink.lines[before])
		}
	}
}

func TestCaseSensitiveRoutesWhenAsked(t *testing.T) {
	if RoutePath("/Auth/Login/", true) != "/Auth/Login" || RoutePath("/Auth/Login/", false) != "/auth/login" {
		t.Errorf("got %q and %q", RoutePath("/Auth/Login/", true), RoutePath("/Auth/Login/", false))
	}
}

// Five wrong passwords in one instant are five distinct lines: Loki and
// the daemon keep an exact repeat once.
func TestAttemptsInOneInstantAreDistinctLines(t *testing.T) {
	g, bl, sink := newTestGateway(t, false)
	bl.replace(nil)
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	g.opts.Now = func() time.Time { return at }
	for range 5 {
		r := httptest.NewRequest("POST", "/auth/login", strings.NewReader(`{"username":"alice","password":"x"}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "203.0.113.7:4000"
		g.ServeHTTP(httptest.NewRecorder(), r)
	}
	seen := map[string]bool{}
	for _, l := range sink.lines {
		seen[l] = true
	}
	if len(sink.lines) != 5 || len(seen) != 5 {
		t.Errorf("%d lines, %d distinct: %q", len(sink.lines), len(seen), sink.lines)
	}
}

// A login body padded past what the gateway reads (the credentials first,
// then megabytes) still names its username, so the account-enumeration
// rule counts it; the body reaches the application whole.
func TestThePaddedLoginBodyStillNamesItsUsername(t *testing.T) {
	g, bl, sink := newTestGateway(t, false)
	bl.replace(nil)
	for _, tt := range []struct{ contentType, body string }{
		{"application/json", `{"username":"alice","password":"x"}` + strings.Repeat(" ", 2<<20)},
		{"application/x-www-form-urlencoded", "username=alice&password=x&pad=" + strings.Repeat("p", 2<<20)},
	} {
		before := len(sink.lines)
		r := httptest.NewRequest("POST", "/auth/login", strings.NewReader(tt.body))
		r.Header.Set("Content-Type", tt.contentType)
		r.RemoteAddr = "203.0.113.7:4000"
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code != 401 || len(sink.lines) != before+1 || !strings.Contains(sink.lines[before], `"username":"alice"`) {
			t.Errorf("%s: %d, audit %q", tt.contentType, w.Code, sink.lines[before:])
		}
	}
}

// An attacker's long path cannot make the audit line longer than Loki
// takes (max_line_size, 256 KB by default): the line is bounded.
func TestAuditLinesAreBoundedWhateverTheRequest(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) }))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	sink := &memSink{}
	g := New(Options{Upstream: u, Blocklist: NewBlocklist(), Audit: sink, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		LoginRoutes: []Route{{"POST", "/auth/login"}}})
	g.opts.Blocklist.replace(nil)
	long := "/auth/login" + strings.Repeat("/.", 200<<10)
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"username":"`+strings.Repeat("u", 100<<10)+`"}`))
	r.URL.Path = long
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", strings.Repeat("a", 100<<10))
	r.RemoteAddr = "203.0.113.7:4000"
	g.ServeHTTP(httptest.NewRecorder(), r)
	if len(sink.lines) != 1 || len(sink.lines[0]) > 4096 {
		t.Fatalf("%d lines, the first of %d bytes", len(sink.lines), len(sink.lines[0]))
	}
}

// Package gateway enforces authguard's blocks in front of a login service.
// In proxy mode it is a reverse proxy that answers 403 AUTH_004 to blocked
// client addresses and writes an audit line for every failed or successful
// login it relays; in forward-auth mode it answers nginx auth_request,
// Traefik ForwardAuth and Envoy ext_authz checks with 200 or 403. Either way
// the check reads an in-memory blocklist kept in sync with Redis.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/responder/auditsig"
	"github.com/authguard/authguard/responder/clip"
)

// Route is a method and path whose responses are audited.
type Route struct{ Method, Path string }

// DefaultLoginRoutes is the runbook's login endpoint.
var DefaultLoginRoutes = []Route{{http.MethodPost, "/auth/login"}}

// maxLoginBody bounds how much of a login body is read for the username.
const maxLoginBody = 64 << 10

// MissChecker looks a client up in Redis when it is not in the local
// blocklist; the zero time means blocked with no expiry.
type MissChecker interface {
	BlockedNow(ctx context.Context, ip netip.Addr) (blocked bool, expires time.Time, err error)
}

// Options configure a Gateway.
type Options struct {
	// Upstream is the protected service (proxy mode); nil selects
	// forward-auth mode, where every request is a check answered with 200
	// (allowed) or 403.
	Upstream *url.URL
	ClientIP ClientIPResolver
	// MissCheck, when set, is asked about clients missing from the local
	// blocklist, so that a block set by hand is enforced at once; it costs
	// a Redis round trip on every request from an unblocked client.
	MissCheck MissChecker
	// MissTimeout bounds a MissCheck look-up (default 50ms); a look-up that
	// fails or times out lets the request through.
	MissTimeout time.Duration
	// FailClosed refuses requests (503) while the blocklist has never been
	// loaded from Redis; otherwise they pass.
	FailClosed  bool
	Blocklist   *Blocklist
	LoginRoutes []Route
	// CaseSensitiveRoutes compares login paths with their case; by default
	// /AUTH/LOGIN is /auth/login, as Express, Rails and Spring route it.
	CaseSensitiveRoutes bool
	// SigningKey, when set, signs every audit line (its sig field), so the
	// daemon can tell the gateway's lines from any other workload's.
	SigningKey *auditsig.Key
	// UsernameField is the login body's username field (JSON or form).
	UsernameField string
	// Accounts, when set, enforces account protection on the login
	// routes (proxy mode: the body names the account) and learns each
	// account's good addresses from the logins that work.
	Accounts AccountGuard
	Audit    Sink
	Log      *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
}

// Gateway enforces blocks.
type Gateway struct {
	opts                          Options
	proxy                         *httputil.ReverseProxy
	allowed, blocked, unavailable prometheus.Counter
	accounts                      accountMetrics
	learning                      chan struct{} // bounds the good-address writes in flight
}

// New returns a gateway.
func New(opts Options) *Gateway {
	if opts.LoginRoutes == nil {
		opts.LoginRoutes = DefaultLoginRoutes
	}
	routes := make([]Route, len(opts.LoginRoutes))
	for i, rt := range opts.LoginRoutes {
		routes[i] = Route{strings.ToUpper(rt.Method), RoutePath(rt.Path, opts.CaseSensitiveRoutes)}
	}
	opts.LoginRoutes = routes
	if opts.UsernameField == "" {
		opts.UsernameField = "username"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MissTimeout <= 0 {
		opts.MissTimeout = 50 * time.Millisecond
	}
	g := &Gateway{opts: opts}
	if up := opts.Upstream; up != nil {
		g.proxy = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(up)
				pr.SetXForwarded()
			},
			// FlushInterval stays 0: ReverseProxy already flushes every write
			// of a response of unknown length or of text/event-stream, which
			// is what streams are; buffering the rest saves a syscall.
			ErrorLog: slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn),
		}
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_gateway_requests_total", Help: "Requests by decision: allowed, blocked, unavailable (fail-mode closed, Redis never reached)."}, []string{"decision"})
	g.allowed, g.blocked, g.unavailable = requests.WithLabelValues("allowed"), requests.WithLabelValues("blocked"), requests.WithLabelValues("unavailable")
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authguard_gateway_blocklist_entries", Help: "Blocks held in memory."}, func() float64 { return float64(opts.Blocklist.Len()) })
	if opts.Registry != nil {
		opts.Registry.MustRegister(requests, size)
	}
	g.accounts = newAccountMetrics(opts.Registry)
	g.learning = make(chan struct{}, maxLearning)
	return g
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string, retry time.Duration) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if retry > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
}

// Verdict is the outcome of a block check.
type Verdict int

// Verdicts.
const (
	Allowed Verdict = iota
	Blocked
	// Unavailable: fail-mode closed and the blocklist never loaded.
	Unavailable
)

// Check decides about a client at now; for Blocked it also returns the time
// left (zero for a block with no expiry). It reads only memory, unless a
// MissChecker is configured and the client is not in the blocklist.
func (g *Gateway) Check(ctx context.Context, ip netip.Addr, now time.Time) (Verdict, time.Duration) {
	if !g.opts.Blocklist.Loaded() && g.opts.FailClosed {
		return Unavailable, 0
	}
	if blocked, left := g.opts.Blocklist.Blocked(ip, now); blocked {
		return Blocked, left
	}
	if g.opts.MissCheck != nil && ip.IsValid() {
		ctx, cancel := context.WithTimeout(ctx, g.opts.MissTimeout)
		blocked, exp, err := g.opts.MissCheck.BlockedNow(ctx, ip)
		cancel()
		if err == nil && blocked {
			g.opts.Blocklist.set(ip, exp)
			if exp.IsZero() {
				return Blocked, 0
			}
			return Blocked, exp.Sub(now)
		}
	}
	return Allowed, 0
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := g.opts.ClientIP.Resolve(r)
	switch v, left := g.Check(r.Context(), ip, g.opts.Now()); v {
	case Unavailable:
		g.unavailable.Inc()
		writeError(w, http.StatusServiceUnavailable, "AUTH_005", "Access control is starting; try again shortly.", 5*time.Second)
		return
	case Blocked:
		g.blocked.Inc()
		writeError(w, http.StatusForbidden, "AUTH_004", "Too many failed login attempts from your address; access is blocked for now.", left)
		return
	}
	g.allowed.Inc()
	if g.proxy == nil {
		// Forward-auth: the proxy in front asked; say yes.
		w.WriteHeader(http.StatusOK)
		return
	}
	if !g.isLogin(r) || (g.opts.Audit == nil && g.opts.Accounts == nil) {
		g.proxy.ServeHTTP(w, r)
		return
	}
	username := g.peekUsername(r)
	if g.refuseLogin(r.Context(), ip, username) {
		g.audit(r, ip, username, "auth_failed", http.StatusForbidden)
		writeError(w, http.StatusForbidden, "AUTH_006", "This account is protected after an attack on it: log in from a device you have used before, or try again later.", 0)
		return
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	g.proxy.ServeHTTP(rec, r)
	switch {
	case rec.status == http.StatusUnauthorized:
		g.audit(r, ip, username, "auth_failed", rec.status)
	case rec.status/100 == 2:
		g.audit(r, ip, username, "auth_succeeded", rec.status)
		g.loggedIn(ip, username)
	}
}

// audit writes the audit line of a login attempt (none without a sink).
func (g *Gateway) audit(r *http.Request, ip netip.Addr, username, action string, status int) {
	if g.opts.Audit == nil {
		return
	}
	at := g.opts.Now()
	ev := AuditEvent{
		TS: at.UTC().Format(time.RFC3339Nano), Service: "audit", Action: action,
		ClientIP: ip.String(), Username: username, Path: clip.String(r.URL.Path, 1024), Status: status,
		UserAgent: clip.String(r.UserAgent(), 256), RequestID: requestID(),
	}
	if k := g.opts.SigningKey; k != nil {
		ev.Sig = k.Sign(auditsig.Fields{TS: ev.TS, Action: ev.Action, ClientIP: ev.ClientIP, Username: ev.Username, RequestID: ev.RequestID})
	}
	g.opts.Audit.Audit(at, marshalAudit(ev))
}

// requestID is a random id for an audit line (16 hex digits).
func requestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (g *Gateway) isLogin(r *http.Request) bool {
	p := RoutePath(r.URL.Path, g.opts.CaseSensitiveRoutes)
	for _, rt := range g.opts.LoginRoutes {
		if strings.EqualFold(r.Method, rt.Method) && p == rt.Path {
			return true
		}
	}
	return false
}

// RoutePath is the form in which a request's path is compared with the
// login routes: however an attacker spells the path, if the application's
// router would take it for the login route, so does the gateway. The path
// (already percent-decoded by net/http, %2F included) loses its path
// parameters (";jsessionid=..."), its dot segments, repeated slashes and
// trailing slash, and, unless caseSensitive, its case.
func RoutePath(p string, caseSensitive bool) string {
	if strings.IndexByte(p, ';') >= 0 {
		segs := strings.Split(p, "/")
		for i, seg := range segs {
			segs[i], _, _ = strings.Cut(seg, ";")
		}
		p = strings.Join(segs, "/")
	}
	p = path.Clean("/" + p)
	if !caseSensitive {
		p = strings.ToLower(p)
	}
	return p
}

// peekUsername reads at most maxLoginBody bytes of the body to find the
// username, and leaves the body intact for the upstream. The password is
// never looked at.
func (g *Gateway) peekUsername(r *http.Request) string {
	if r.Body == nil {
		return ""
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, maxLoginBody+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	if err != nil {
		return ""
	}
	if len(head) > maxLoginBody {
		// A padded body (the credentials first, then megabytes): the
		// username is read from its head, as the application's streaming
		// decoder reads it.
		head = head[:maxLoginBody]
	}
	return clip.String(UsernameFromBody(r.Header.Get("Content-Type"), head, g.opts.UsernameField), 256)
}

// UsernameFromBody extracts the username field of a JSON or form login body.
func UsernameFromBody(contentType string, body []byte, field string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/x-www-form-urlencoded":
		// Pairs are read up to the first one that does not parse, so a
		// body cut short still names its username.
		for pair := range strings.SplitSeq(string(body), "&") {
			k, v, _ := strings.Cut(pair, "=")
			key, err1 := url.QueryUnescape(k)
			val, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return ""
			}
			if key == field {
				return val
			}
		}
		return ""
	case mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "":
		// The first JSON value, as a streaming decoder reads it: what
		// follows it (padding, or a body cut short) does not matter.
		var obj map[string]json.RawMessage
		if json.NewDecoder(bytes.NewReader(body)).Decode(&obj) != nil {
			return ""
		}
		var s string
		if json.Unmarshal(obj[field], &s) != nil {
			return ""
		}
		return s
	}
	return ""
}

type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

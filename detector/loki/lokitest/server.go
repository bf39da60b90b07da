// Package lokitest is a fake Loki that speaks Loki's real HTTP and websocket
// protocol: push (JSON and snappy-compressed protobuf), query_range and tail.
// It reproduces the behaviour listed in shared/LOKI-FACTS.md (answers, close
// codes, ordering, label rules, de-duplication), including the unkind parts
// of a real Loki, each a Quirk on by default: tails with parser stages that
// keep a few entries of each push, tails that lose whole pushes under load
// without saying so, frame caps, one stream object per entry, and the phases
// of a restart. facts_test.go checks each fact on the fake, and under
// make test-real on the real binary, which StartReal runs on loopback. Of
// metric queries it answers the one authguard asks,
// sum(count_over_time(LOG_QUERY [RANGE])) over query_range with a step, as a
// Prometheus-style matrix.
package lokitest

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Quirk is a behaviour of a real Loki (shared/LOKI-FACTS.md) that the fake
// reproduces by default; Options.Without turns quirks off, so a test can show
// what a client would get from a kinder server.
type Quirk uint

const (
	// ParserTailLoss: a tail whose query has a parser or label-filter stage
	// (| json, | x="y") delivers at most 6 entries of each push and reports
	// no drop, as Loki did (15 pushed, 6 tailed; 100 pushed, 7 tailed).
	ParserTailLoss Quirk = 1 << iota
	// LoadDrops: a tail whose backlog of entries not yet sent exceeds
	// Options.TailBuffer loses whole pushes without dropped_entries, as
	// Loki's ingester tailer does ("tailer dropped streams is reset").
	LoadDrops
	// FrameCaps: a tail frame holds at most 100 entries, and lists at most
	// 1,000 dropped_entries (the rest of a drop is not reported).
	FrameCaps
	// StreamPerEntry: a tail frame holds one stream object per entry, even
	// when entries share their labels.
	StreamPerEntry
	// RestartPhases: Restart closes tails with 1011 "all ingesters closed
	// the connection", answers pushes 500 "empty ring" while it stops
	// (StoppingFor), then /ready answers 503 "Ingester not ready" for
	// NotReadyFor after it starts (pushes and queries are served).
	RestartPhases
)

// AllQuirks are every quirk the fake knows.
const AllQuirks = ParserTailLoss | LoadDrops | FrameCaps | StreamPerEntry | RestartPhases

// Options tune the fake. The zero value behaves like a single-tenant Loki
// with default limits and every quirk of a real one.
type Options struct {
	// MultiTenant requires X-Scope-OrgID on every request (auth_enabled).
	MultiTenant bool
	// Without turns off the quirks named (none by default).
	Without Quirk
	// TailMaxDuration closes tails with 1011 after this long (default 1h).
	TailMaxDuration time.Duration
	// MaxConcurrentTails per tenant (default 10).
	MaxConcurrentTails int
	// BatchInterval between tail frames (default 500ms, as Loki).
	BatchInterval time.Duration
	// TailCapacity is the most entries a tail sends per second (default
	// 2000, what one Loki tail carried); the rest wait.
	TailCapacity int
	// TailBuffer is the backlog a tail holds before LoadDrops loses pushes
	// (default 10000).
	TailBuffer int
	// StoppingFor and NotReadyFor are the phases of a restart (defaults 2s
	// and 15s, as Loki).
	StoppingFor, NotReadyFor time.Duration
	// PingInterval between websocket pings (default 1s).
	PingInterval time.Duration
	// MaxEntriesPerQuery caps query_range's limit (default 5000).
	MaxEntriesPerQuery int
	// TLS serves HTTPS (and WSS) with httptest's certificate.
	TLS bool
	// Authorize, when set, must accept every request (an auth proxy in
	// front of Loki); refused requests get 401.
	Authorize func(*http.Request) bool
}

// Lenient turns every quirk off: a Loki whose tails never lose, cap or
// delay anything, for tests about something else.
func Lenient(o Options) Options {
	o.Without = AllQuirks
	return o
}

func (s *Server) has(q Quirk) bool { return s.opts.Without&q == 0 }

// Server is a running fake Loki.
type Server struct {
	*httptest.Server
	opts Options

	mu       sync.Mutex
	tenants  map[string]*tenant
	closed   chan struct{}
	once     sync.Once
	mux      *http.ServeMux
	dropNext int // entries to withhold from tails and report as dropped
	// phase of a restart: 0 serving, phaseStopping, phaseNotReady.
	phase         int
	notReadyUntil time.Time
}

const (
	phaseStopping = 1 + iota
	phaseNotReady
)

type tenant struct {
	streams map[string]*stream // by label string
	tails   map[*tail]struct{}
}

type stream struct {
	labels  map[string]string
	entries []entry // sorted by time
}

type entry struct {
	ts   int64
	line string
}

type tail struct {
	q       *query
	lossy   bool // the query has parser or label-filter stages
	pending []result
	dropped []result // withheld entries, reported as dropped_entries
	wake    chan struct{}
	kill    chan string // close reason for an administrative close
	conn    *websocket.Conn
}

type result struct {
	labels map[string]string
	e      entry
}

// New starts a fake Loki on a loopback port.
func New(opts Options) *Server {
	if opts.TailMaxDuration == 0 {
		opts.TailMaxDuration = time.Hour
	}
	if opts.MaxConcurrentTails == 0 {
		opts.MaxConcurrentTails = 10
	}
	if opts.BatchInterval == 0 {
		opts.BatchInterval = 500 * time.Millisecond
	}
	if opts.TailCapacity == 0 {
		opts.TailCapacity = 2000
	}
	if opts.TailBuffer == 0 {
		opts.TailBuffer = 10000
	}
	if opts.StoppingFor == 0 {
		opts.StoppingFor = 2 * time.Second
	}
	if opts.NotReadyFor == 0 {
		opts.NotReadyFor = 15 * time.Second
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = time.Second
	}
	if opts.MaxEntriesPerQuery == 0 {
		opts.MaxEntriesPerQuery = 5000
	}
	s := &Server{opts: opts, tenants: map[string]*tenant{}, closed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /loki/api/v1/push", s.push)
	mux.HandleFunc("GET /loki/api/v1/query_range", s.queryRange)
	mux.HandleFunc("GET /loki/api/v1/tail", s.tail)
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready\n") })
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {})
	s.mux = mux
	s.Server = httptest.NewUnstartedServer(s.handler())
	s.start()
	return s
}

func (s *Server) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Authorize != nil && !s.opts.Authorize(r) {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		phase := s.phase
		if phase == phaseNotReady && !time.Now().Before(s.notReadyUntil) {
			s.phase, phase = 0, 0
		}
		s.mu.Unlock()
		switch {
		case phase == phaseStopping && r.URL.Path == "/loki/api/v1/push":
			http.Error(w, "empty ring", http.StatusInternalServerError)
			return
		case phase == phaseNotReady && r.URL.Path == "/ready":
			// Pushes and queries are served meanwhile (observed
			// 2026-12-02); only /ready says not ready.
			http.Error(w, "Ingester not ready: waiting for 15s after being ready", http.StatusServiceUnavailable)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) start() {
	if s.opts.TLS {
		s.Server.StartTLS()
		return
	}
	s.Server.Start()
}

// DropNext makes the tails withhold the next n matching entries and report
// them in dropped_entries instead, as Loki does for a slow client. The
// entries are stored and query_range returns them.
func (s *Server) DropNext(n int) {
	s.mu.Lock()
	s.dropNext += n
	s.mu.Unlock()
}

// ResetConnections cuts every open tail's TCP connection without a close
// frame (an RST), as a crashed node or a flaky network would.
func (s *Server) ResetConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tenants {
		for tl := range t.tails {
			if tl.conn == nil {
				continue
			}
			if tcp, ok := tl.conn.NetConn().(*net.TCPConn); ok {
				tcp.SetLinger(0)
			}
			tl.conn.NetConn().Close()
		}
	}
}

// Restart stops the server and starts it again on the same address with
// the same stored entries, as a Loki restart would (Loki keeps what it
// ingested). With RestartPhases (the default) it first closes every tail
// with 1011 "all ingesters closed the connection" and answers pushes 500
// "empty ring" for StoppingFor; once it listens again /ready answers 503
// "Ingester not ready" for NotReadyFor. Restart returns when it listens
// again; the not-ready phase runs on after it.
func (s *Server) Restart() {
	addr := s.Listener.Addr().String()
	if s.has(RestartPhases) {
		s.mu.Lock()
		s.phase = phaseStopping
		s.mu.Unlock()
		s.DropTails("all ingesters closed the connection")
		time.Sleep(s.opts.StoppingFor) // the fake's own shutdown, not a test's wait
	}
	s.ResetConnections()
	s.Server.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic("lokitest: restart on " + addr + ": " + err.Error())
	}
	srv := httptest.NewUnstartedServer(s.handler())
	srv.Listener.Close()
	srv.Listener = ln
	s.mu.Lock()
	s.phase = 0
	if s.has(RestartPhases) {
		s.phase, s.notReadyUntil = phaseNotReady, time.Now().Add(s.opts.NotReadyFor)
	}
	s.mu.Unlock()
	s.Server = srv
	s.start()
}

// Ready reports whether the server answers requests (it is not stopping or
// starting after a Restart).
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase == 0 || s.phase == phaseNotReady && !time.Now().Before(s.notReadyUntil)
}

// Close stops the server and ends all tails.
func (s *Server) Close() {
	s.once.Do(func() { close(s.closed) })
	s.Server.CloseClientConnections()
	s.Server.Close()
}

// DropTails closes every open tail with code 1011 and the given reason, as a
// restarting querier would.
func (s *Server) DropTails(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tenants {
		for tl := range t.tails {
			select {
			case tl.kill <- reason:
			default:
			}
		}
	}
}

// Push stores one line in a stream, as an HTTP push would.
func (s *Server) Push(tenantID string, labels map[string]string, ts time.Time, line string) {
	s.store(tenantID, labels, []entry{{ts.UnixNano(), line}})
}

func (s *Server) tenantOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.Header.Get("X-Scope-OrgID")
	if id == "" {
		if s.opts.MultiTenant {
			http.Error(w, "no org id", http.StatusUnauthorized)
			return "", false
		}
		id = "fake"
	}
	return id, true
}

func (s *Server) tenantLocked(id string) *tenant {
	t := s.tenants[id]
	if t == nil {
		t = &tenant{streams: map[string]*stream{}, tails: map[*tail]struct{}{}}
		s.tenants[id] = t
	}
	return t
}

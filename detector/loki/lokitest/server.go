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
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
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

func (s *Server) push(w http.ResponseWriter, r *http.Request) {
	id, ok := s.tenantOf(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	streams, err := decodePush(r.Header.Get("Content-Type"), body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(streams) == 0 {
		http.Error(w, "error at least one valid stream is required for ingestion", http.StatusUnprocessableEntity)
		return
	}
	for _, st := range streams {
		s.store(id, st.labels, st.entries)
	}
	w.WriteHeader(http.StatusNoContent)
}

// store adds entries; Loki ingests service_name and detected_level with each
// stream and de-duplicates exact repeats (same stream, timestamp and line).
func (s *Server) store(id string, labels map[string]string, entries []entry) {
	labels = cloneLabels(labels)
	if _, ok := labels["service_name"]; !ok {
		labels["service_name"] = "unknown_service"
		if v, ok := labels["service"]; ok {
			labels["service_name"] = v
		}
	}
	key := labelString(labels)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenantLocked(id)
	st := t.streams[key]
	if st == nil {
		st = &stream{labels: labels}
		t.streams[key] = st
	}
	// What each tail took of this push, for ParserTailLoss and LoadDrops.
	took := map[*tail]int{}
	full := map[*tail]bool{}
	for tl := range t.tails {
		full[tl] = s.has(LoadDrops) && len(tl.pending) > s.opts.TailBuffer
	}
	for _, e := range entries {
		i := sort.Search(len(st.entries), func(i int) bool { return st.entries[i].ts > e.ts })
		dup := false
		for j := i - 1; j >= 0 && st.entries[j].ts == e.ts; j-- {
			if st.entries[j].line == e.line {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		st.entries = append(st.entries, entry{})
		copy(st.entries[i+1:], st.entries[i:])
		st.entries[i] = e
		for tl := range t.tails {
			if tl.q.selects(labels) {
				if out, ok := tl.q.process(withDetected(labels), e.line); ok {
					if full[tl] || tl.lossy && s.has(ParserTailLoss) && took[tl] >= parserTailKeep {
						continue // lost without a word, as Loki does
					}
					took[tl]++
					if s.dropNext > 0 {
						s.dropNext--
						tl.dropped = append(tl.dropped, result{out, e})
						continue
					}
					tl.pending = append(tl.pending, result{out, e})
					select {
					case tl.wake <- struct{}{}:
					default:
					}
				}
			}
		}
	}
}

// parserTailKeep is how many entries of one push a tail with parser stages
// delivers (LOKI-FACTS.md: 15 pushed, 6 tailed).
const parserTailKeep = 6

// Frame caps of Loki's querier (maxEntriesPerTailResponse,
// maxDroppedEntriesPerTailResponse).
const (
	maxFrameEntries   = 100
	maxDroppedEntries = 1000
)

func withDetected(labels map[string]string) map[string]string {
	l := cloneLabels(labels)
	l["detected_level"] = "unknown"
	return l
}

// selectLocked returns matching entries in [start, end), at most limit, the
// oldest first for forward and the newest first for backward.
func (t *tenant) selectLocked(q *query, start, end int64, limit int, forward bool) []result {
	var all []result
	for _, st := range t.streams {
		if !q.selects(st.labels) {
			continue
		}
		// Each stream is in time order, so the overall oldest (newest)
		// limit entries are among each stream's oldest (newest) limit.
		lo := sort.Search(len(st.entries), func(i int) bool { return st.entries[i].ts >= start })
		hi := sort.Search(len(st.entries), func(i int) bool { return st.entries[i].ts >= end })
		var picked []result
		for i := lo; i < hi && len(picked) < limit; i++ {
			j := i
			if !forward {
				j = hi - 1 - (i - lo)
			}
			e := st.entries[j]
			if out, ok := q.process(withDetected(st.labels), e.line); ok {
				picked = append(picked, result{out, e})
			}
		}
		all = append(all, picked...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if forward {
			return all[i].e.ts < all[j].e.ts
		}
		return all[i].e.ts > all[j].e.ts
	})
	if len(all) > limit {
		all = all[:limit]
	}
	return all
}

type wireStream struct {
	Stream map[string]string `json:"stream"`
	Values [][2]string       `json:"values"`
}

// group puts results into per-stream groups in Loki's wire shape: the
// groups are not in time order across streams.
func group(rs []result) []wireStream {
	idx := map[string]int{}
	var out []wireStream
	for _, r := range rs {
		k := labelString(r.labels)
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, wireStream{Stream: r.labels})
		}
		out[i].Values = append(out[i].Values, [2]string{strconv.FormatInt(r.e.ts, 10), r.e.line})
	}
	sort.Slice(out, func(i, j int) bool { return labelString(out[i].Stream) < labelString(out[j].Stream) })
	return out
}

func parseTime(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return int64(f * 1e9), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q to a valid timestamp", s)
	}
	return t.UnixNano(), nil
}

// request reads what query_range and tail share: the tenant, the query and
// the limit (default 100). On a problem it has answered and ok is false.
func (s *Server) request(w http.ResponseWriter, r *http.Request) (id string, q *query, limit int, ok bool) {
	if id, ok = s.tenantOf(w, r); !ok {
		return
	}
	v := r.URL.Query()
	q, err := parseQuery(v.Get("query"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", nil, 0, false
	}
	limit = 100
	if l := v.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit <= 0 {
			http.Error(w, "invalid limit", http.StatusBadRequest)
			return "", nil, 0, false
		}
	}
	return id, q, limit, true
}

func (s *Server) queryRange(w http.ResponseWriter, r *http.Request) {
	if inner, window, ok := metricQuery(r.URL.Query().Get("query")); ok {
		s.metricRange(w, r, inner, window)
		return
	}
	id, q, limit, ok := s.request(w, r)
	if !ok {
		return
	}
	v := r.URL.Query()
	start, end, err := timeRange(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if limit > s.opts.MaxEntriesPerQuery {
		http.Error(w, fmt.Sprintf("max entries limit per query exceeded, limit > max_entries_limit_per_query (%d > %d)", limit, s.opts.MaxEntriesPerQuery), http.StatusBadRequest)
		return
	}
	forward := v.Get("direction") == "forward"
	s.mu.Lock()
	rs := s.tenantLocked(id).selectLocked(q, start, end, limit, forward)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"status": "success",
		"data": map[string]any{
			"resultType": "streams",
			"result":     group(rs),
			"stats":      map[string]any{"summary": map[string]any{"totalEntriesReturned": len(rs)}},
		},
	})
}

// metricQuery recognises the one metric query the fake answers,
// sum(count_over_time(LOG_QUERY [RANGE])), and returns its parts.
func metricQuery(q string) (inner string, window time.Duration, ok bool) {
	q = strings.TrimSpace(q)
	body, found := strings.CutPrefix(q, "sum(count_over_time(")
	if !found || !strings.HasSuffix(body, "]))") {
		return "", 0, false
	}
	body = strings.TrimSuffix(body, "]))")
	i := strings.LastIndex(body, "[")
	if i < 0 {
		return "", 0, false
	}
	d, err := time.ParseDuration(body[i+1:])
	if err != nil || d <= 0 {
		return "", 0, false
	}
	return strings.TrimSpace(body[:i]), d, true
}

// timeRange reads a query's start and end as Loki does: end defaults to
// now, start to an hour before end.
func timeRange(v url.Values) (start, end int64, err error) {
	if end, err = parseTime(v.Get("end"), time.Now().UnixNano()); err != nil {
		return 0, 0, err
	}
	start, err = parseTime(v.Get("start"), end-int64(time.Hour))
	return start, end, err
}

// parseStep reads a query step as Loki does: seconds ("60") or a
// duration ("1m"); it must be positive.
func parseStep(s string) (time.Duration, error) {
	if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
		return time.Duration(secs * float64(time.Second)), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("invalid step %q: a metric query needs a positive step", s)
}

// metricRange answers sum(count_over_time(q [window])) as Loki does: a
// matrix with one series, a sample at each step from start to end whose
// window (t-window, t] holds entries, none where it holds none.
func (s *Server) metricRange(w http.ResponseWriter, r *http.Request, inner string, window time.Duration) {
	id, ok := s.tenantOf(w, r)
	if !ok {
		return
	}
	q, err := parseQuery(inner)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	v := r.URL.Query()
	start, end, err := timeRange(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	step, err := parseStep(v.Get("step"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	rs := s.tenantLocked(id).selectLocked(q, start-int64(window), end+1, math.MaxInt, true)
	s.mu.Unlock()
	values := [][2]any{}
	for t := start; t <= end; t += int64(step) {
		n := 0
		for _, r := range rs {
			if r.e.ts > t-int64(window) && r.e.ts <= t {
				n++
			}
		}
		if n > 0 {
			values = append(values, [2]any{float64(t) / 1e9, strconv.Itoa(n)})
		}
	}
	result := []any{}
	if len(values) > 0 {
		result = append(result, map[string]any{"metric": map[string]string{}, "values": values})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "matrix", "result": result}})
}

// frame writes one tail frame in Loki's shape: the entries (one stream
// object per entry with StreamPerEntry, else grouped per stream) and the
// dropped_entries Loki reports, at most 1,000 with FrameCaps.
func (s *Server) frame(conn *websocket.Conn, rs, dropped []result) error {
	type droppedEntry struct {
		Labels    map[string]string `json:"labels"`
		Timestamp string            `json:"timestamp"`
	}
	if s.has(FrameCaps) && len(dropped) > maxDroppedEntries {
		dropped = dropped[:maxDroppedEntries]
	}
	var streams []wireStream
	if s.has(StreamPerEntry) {
		for _, r := range rs {
			streams = append(streams, wireStream{Stream: r.labels, Values: [][2]string{{strconv.FormatInt(r.e.ts, 10), r.e.line}}})
		}
	} else {
		streams = group(rs)
	}
	if streams == nil {
		streams = []wireStream{}
	}
	f := map[string]any{"streams": streams}
	if len(dropped) > 0 {
		d := make([]droppedEntry, 0, len(dropped))
		for _, r := range dropped {
			d = append(d, droppedEntry{r.labels, strconv.FormatInt(r.e.ts, 10)})
		}
		f["dropped_entries"] = d
	}
	return conn.WriteJSON(f)
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) tail(w http.ResponseWriter, r *http.Request) {
	id, q, limit, ok := s.request(w, r)
	if !ok {
		return
	}
	v := r.URL.Query()
	if d := v.Get("delay_for"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil {
			http.Error(w, "delay_for must be a number", http.StatusBadRequest)
			return
		}
		if n > 5 {
			http.Error(w, "delay_for can't be greater than 5", http.StatusBadRequest)
			return
		}
	}
	now := time.Now().UnixNano()
	start, err := parseTime(v.Get("start"), now-int64(time.Hour))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The tail is registered before the handshake completes, so a client
	// whose handshake succeeded is counted against the limit.
	tl := &tail{q: q, lossy: q.lossy(), wake: make(chan struct{}, 1), kill: make(chan string, 1)}
	s.mu.Lock()
	t := s.tenantLocked(id)
	over := len(t.tails) >= s.opts.MaxConcurrentTails
	count := len(t.tails) + 1
	var history []result
	if !over {
		// History: only the newest `limit` lines since start, as Loki does.
		history = t.selectLocked(q, start, now, limit, false)
		sort.SliceStable(history, func(i, j int) bool { return history[i].e.ts < history[j].e.ts })
		t.tails[tl] = struct{}{}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(t.tails, tl)
		s.mu.Unlock()
	}()
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	s.mu.Lock()
	tl.conn = conn
	s.mu.Unlock()
	if over {
		reason := fmt.Sprintf("rpc error: code = Code(400) desc = max concurrent tail requests limit exceeded, count > limit (%d > %d)", count, s.opts.MaxConcurrentTails)
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, reason), time.Now().Add(time.Second))
		return
	}

	// Read side: answer pings and notice the client leaving.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()

	if len(history) > 0 {
		if err := s.frame(conn, history, nil); err != nil {
			return
		}
	}
	deadline := time.NewTimer(s.opts.TailMaxDuration)
	defer deadline.Stop()
	ping := time.NewTicker(s.opts.PingInterval)
	defer ping.Stop()
	batch := time.NewTicker(s.opts.BatchInterval)
	defer batch.Stop()
	closeWith := func(reason string) {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, reason), time.Now().Add(time.Second))
	}
	for {
		select {
		case <-gone:
			return
		case <-s.closed:
			return
		case reason := <-tl.kill:
			closeWith(reason)
			return
		case <-deadline.C:
			closeWith("reached tail max duration limit")
			return
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
				return
			}
		case <-batch.C:
			// A tail sends at most TailCapacity entries a second, in frames
			// of at most 100 with FrameCaps; the rest wait for the next
			// batch, in arrival order.
			s.mu.Lock()
			budget := max(1, int(float64(s.opts.TailCapacity)*s.opts.BatchInterval.Seconds()))
			n := min(budget, len(tl.pending))
			rs := append([]result(nil), tl.pending[:n]...)
			tl.pending = append(tl.pending[:0], tl.pending[n:]...)
			dropped := tl.dropped
			tl.dropped = nil
			s.mu.Unlock()
			per := len(rs)
			if s.has(FrameCaps) {
				per = maxFrameEntries
			}
			for len(rs) > 0 || len(dropped) > 0 {
				k := min(per, len(rs))
				chunk := rs[:k]
				sort.SliceStable(chunk, func(i, j int) bool { return chunk[i].e.ts < chunk[j].e.ts })
				if err := s.frame(conn, chunk, dropped); err != nil {
					return
				}
				rs, dropped = rs[k:], nil
			}
		}
	}
}

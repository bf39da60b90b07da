package lokitest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

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

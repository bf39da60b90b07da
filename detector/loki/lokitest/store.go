package lokitest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"
)

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

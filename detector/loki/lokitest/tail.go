package lokitest

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

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

	s.stream(conn, tl, history)
}

// stream sends a registered tail its history, then its entries batch by
// batch, pings, and the close Loki sends at the tail's end.
func (s *Server) stream(conn *websocket.Conn, tl *tail, history []result) {
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
			if s.sendBatch(conn, tl) != nil {
				return
			}
		}
	}
}

// sendBatch sends a tail at most TailCapacity entries a second, in frames
// of at most 100 with FrameCaps; the rest wait for the next batch, in
// arrival order.
func (s *Server) sendBatch(conn *websocket.Conn, tl *tail) error {
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
			return err
		}
		rs, dropped = rs[k:], nil
	}
	return nil
}

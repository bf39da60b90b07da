package logfile

import (
	"container/heap"
	"fmt"
	"time"

	"github.com/authguard/authguard/detector"
)

// reorder puts an input's entries in time order within a window: each is
// held until one at least the window later was read (or more than the
// bound are held), then given out oldest first; an entry older than one
// given out already is an input out of order beyond the window. Entries
// in order, the usual case, take a queue; the others a heap.
type reorder struct {
	window  time.Duration
	maxHeld int
	fromEnd bool // the input is read backward: its lines count from the end

	queue   ring     // in order of time
	late    heldHeap // read after a later entry
	seq     uint64
	maxSeen time.Time
	lastOut time.Time
	given   bool
	ready   []detector.Event
}

type held struct {
	ev  detector.Event
	seq uint64 // read order, for entries of equal time
}

func (h held) before(o held) bool {
	return h.ev.Time.Before(o.ev.Time) || h.ev.Time.Equal(o.ev.Time) && h.seq < o.seq
}

type heldHeap []held

func (h heldHeap) Len() int           { return len(h) }
func (h heldHeap) Less(i, j int) bool { return h[i].before(h[j]) }
func (h heldHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *heldHeap) Push(x any)        { *h = append(*h, x.(held)) }
func (h *heldHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = held{}
	*h = old[:len(old)-1]
	return x
}

func (r *reorder) held() int { return r.queue.n + len(r.late) }

// ring is a queue of entries in a circular buffer that doubles when full.
type ring struct {
	buf     []held
	head, n int
}

func (q *ring) push(h held) {
	if q.n == len(q.buf) {
		grown := make([]held, max(1024, 2*len(q.buf)))
		for i := range q.n {
			grown[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = h
	q.n++
}

func (q *ring) first() *held { return &q.buf[q.head] }

func (q *ring) pop() held {
	h := q.buf[q.head]
	q.buf[q.head] = held{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return h
}

// push takes the entry read at line and returns the entries now ready, in
// order (valid until the next call).
func (r *reorder) push(ev detector.Event, line int) ([]detector.Event, error) {
	if r.given && ev.Time.Before(r.lastOut) {
		at := fmt.Sprintf("line %d", line)
		if r.fromEnd {
			at += " from the end"
		}
		return nil, fmt.Errorf("%s: an entry of %s is %s older than one already replayed (%s): the log is not in time order beyond --reorder-window %s: widen the window, or give --sort to sort it in memory",
			at, detector.FormatTime(ev.Time), detector.FormatDuration(r.lastOut.Sub(ev.Time)), detector.FormatTime(r.lastOut), detector.FormatDuration(r.window))
	}
	h := held{ev, r.seq}
	r.seq++
	if !ev.Time.Before(r.maxSeen) {
		r.queue.push(h)
		r.maxSeen = ev.Time
	} else {
		heap.Push(&r.late, h)
	}
	r.ready = r.ready[:0]
	horizon := r.maxSeen.Add(-r.window) // saturates for an endless window
	for r.held() > 0 {
		next := r.peek()
		if next.ev.Time.After(horizon) && r.held() <= r.maxHeld {
			break
		}
		r.take()
	}
	return r.ready, nil
}

// drain gives out every entry held, in order.
func (r *reorder) drain() []detector.Event {
	r.ready = r.ready[:0]
	for r.held() > 0 {
		r.take()
	}
	return r.ready
}

func (r *reorder) peek() *held {
	if r.fromQueue() {
		return r.queue.first()
	}
	return &r.late[0]
}

// fromQueue says whether the oldest entry held is the queue's first.
func (r *reorder) fromQueue() bool {
	return r.queue.n > 0 && (len(r.late) == 0 || r.queue.first().before(r.late[0]))
}

// take gives out the oldest entry held.
func (r *reorder) take() {
	var h held
	if r.fromQueue() {
		h = r.queue.pop()
	} else {
		h = heap.Pop(&r.late).(held)
	}
	r.ready = append(r.ready, h.ev)
	r.lastOut, r.given = h.ev.Time, true
}

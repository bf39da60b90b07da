package logfile

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/authguard/authguard/detector"
)

// Stream reads every input, each on a goroutine of its own that parses
// ahead, merges their events into time order and calls emit with each
// once: the same entry in several inputs (overlapping exports, a file
// given twice) or twice in one is one event, as Loki stores an exact
// repeat once. Memory is bounded by the entries held to put each input in
// order (Options.Window, MaxHeld), not by the inputs' size. It returns
// what was read, per reason what was skipped, and the first error: an
// input's, or emit's, which stops the reading.
func Stream(ctx context.Context, inputs []Input, o Options, emit func(*detector.Event) error) (Stats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.MaxHeld <= 0 {
		o.MaxHeld = 1 << 20
	}
	sources := make([]*source, len(inputs))
	for i, in := range inputs {
		s := &source{in: in, o: o, st: Stats{Skipped: map[string]int{}}, out: make(chan []detector.Event, 4),
			order: reorder{window: o.Window, maxHeld: o.MaxHeld}, batch: make([]detector.Event, 0, batchSize)}
		sources[i] = s
		go s.run(ctx)
	}
	// An input that fails stops the whole: no decision is made past it.
	m := merge{failed: func(i int) error {
		if err := sources[i].err; err != nil {
			return fmt.Errorf("%s: %w", sources[i].in.Name, err)
		}
		return nil
	}}
	err := m.start(len(sources), func(i int) <-chan []detector.Event { return sources[i].out })
	if err == nil {
		err = m.run(emit)
	}
	cancel()
	total := Stats{Skipped: map[string]int{}, Duplicates: m.dups}
	for _, s := range sources {
		for range s.out { // wait for it to stop
		}
		total.add(s.st)
	}
	total.Events -= m.dups
	return total, err
}

// add sums another input's counts into st.
func (st *Stats) add(o Stats) {
	st.Lines += o.Lines
	st.Events += o.Events
	st.Duplicates += o.Duplicates
	for r, n := range o.Skipped {
		st.Skipped[r] += n
	}
	if st.FirstSkip == nil {
		st.FirstSkip = o.FirstSkip
	}
}

// merge takes the oldest event of the inputs' heads, one at a time.
type merge struct {
	heads  headHeap
	failed func(input int) error // why an input that ended stopped, if it failed
	dups   int
	// The lines of the events given out at the latest time, for repeats.
	at    time.Time
	lines []string
}

type head struct {
	input int
	batch []detector.Event
	i     int
	ch    <-chan []detector.Event
}

type headHeap []*head

func (h headHeap) Len() int { return len(h) }
func (h headHeap) Less(i, j int) bool {
	a, b := h[i].batch[h[i].i].Time, h[j].batch[h[j].i].Time
	return a.Before(b) || a.Equal(b) && h[i].input < h[j].input
}
func (h headHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *headHeap) Push(x any)   { *h = append(*h, x.(*head)) }
func (h *headHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (m *merge) start(n int, out func(int) <-chan []detector.Event) error {
	for i := range n {
		if err := m.next(i, out(i)); err != nil {
			return err
		}
	}
	return nil
}

// next puts the input's next batch in the heap, unless it has ended; it
// returns the input's error when it failed.
func (m *merge) next(input int, ch <-chan []detector.Event) error {
	if b, ok := <-ch; ok {
		heap.Push(&m.heads, &head{input: input, batch: b, ch: ch})
		return nil
	}
	return m.failed(input)
}

func (m *merge) run(emit func(*detector.Event) error) error {
	for len(m.heads) > 0 {
		h := m.heads[0]
		ev := &h.batch[h.i]
		if !m.repeat(ev) {
			if err := emit(ev); err != nil {
				return err
			}
		}
		h.i++
		if h.i < len(h.batch) {
			heap.Fix(&m.heads, 0)
			continue
		}
		heap.Pop(&m.heads)
		if err := m.next(h.input, h.ch); err != nil {
			return err
		}
	}
	return nil
}

// repeat says whether ev was given out already: the same time and line.
func (m *merge) repeat(ev *detector.Event) bool {
	if !ev.Time.Equal(m.at) {
		m.at, m.lines = ev.Time, m.lines[:0]
	}
	for _, l := range m.lines {
		if l == ev.Line {
			m.dups++
			return true
		}
	}
	m.lines = append(m.lines, ev.Line)
	return false
}

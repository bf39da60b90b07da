package loki

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/clip"
)

type tsLine struct {
	ts     int64
	line   string
	labels map[string]string
}

// mergeEntries flattens streams into one time-ordered list (stable, so a
// stream's own order is kept among equal timestamps). Entries with a bad
// timestamp are skipped and, with a skipLog, counted.
func mergeEntries(streams []wireStream, skips *skipLog) []tsLine {
	n := 0
	for _, s := range streams {
		n += len(s.Values)
	}
	entries := make([]tsLine, 0, n)
	for _, s := range streams {
		for _, v := range s.Values {
			ts, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil {
				if skips != nil {
					skips.skip(&SkipError{SkipBadTime, "entry timestamp " + clip.String(v[0], 32)}, v[1])
				}
				continue
			}
			entries = append(entries, tsLine{ts, v[1], s.Stream})
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].ts < entries[j].ts })
	return entries
}

// stage turns entries into events, the same way for the tail and the push
// receiver: a repeat (overlapping query answers, a pusher's retry) is
// dropped, a line the query's own stages reject is filtered, one that does
// not parse is counted and sampled, and the rest is sent on.
type stage struct {
	parser  *Parser
	metrics *Metrics
	skips   skipLog
	// keep applies the query's stages Loki was not sent (nil: keep all).
	keep func(labels map[string]string, line string) bool
	// mu guards dedup between concurrent pushes; the tail reads from one
	// goroutine.
	mu    sync.Mutex
	dedup *dedup
}

func newStage(p *Parser, log *slog.Logger, m *Metrics) *stage {
	return &stage{parser: p, metrics: m, skips: skipLog{log: log, metrics: m}, dedup: newDedup(1 << 20)}
}

// pass delivers one entry first seen at seen (the dedup memory's clock);
// fresh says it was not a repeat.
func (s *stage) pass(ctx context.Context, e tsLine, seen int64, catchUp bool, out chan<- detector.Event) (fresh bool, err error) {
	s.mu.Lock()
	first := s.dedup.first(e.ts, e.line, seen)
	s.mu.Unlock()
	if !first {
		s.metrics.Duplicates.Inc()
		return false, nil
	}
	if s.keep != nil && !s.keep(e.labels, e.line) {
		s.metrics.Filtered.Inc()
		return true, nil
	}
	ev, err := s.parser.Parse(time.Unix(0, e.ts).UTC(), e.line)
	if err != nil {
		s.skips.skip(err, e.line)
		return true, nil
	}
	ev.CatchUp = catchUp
	s.metrics.Lines.Inc()
	select {
	case out <- ev:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// deliver merges streams into time order (Loki groups entries per stream,
// and each distinct label set is its own stream) and passes them through
// the stage; it returns how many entries were new. Entries not read live
// are marked as caught up.
func (t *Tail) deliver(ctx context.Context, streams []wireStream, src source, out chan<- detector.Event) (int, error) {
	fresh := 0
	now := time.Now()
	for _, e := range mergeEntries(streams, &t.stage.skips) {
		isNew, err := t.stage.pass(ctx, e, e.ts, src != fromTail, out)
		if err != nil {
			return fresh, err
		}
		if !isNew {
			continue
		}
		fresh++
		t.newest = max(t.newest, e.ts)
		if src != fromCatchUp || t.sweptUntil.Load() > now.Add(-t.cfg.MaxLag).UnixNano() {
			t.metrics.ReadDelay.Observe(now.Sub(time.Unix(0, e.ts)).Seconds())
		}
	}
	if t.newest > 0 {
		t.metrics.Lag.Set(time.Since(time.Unix(0, t.newest)).Seconds())
	}
	return fresh, nil
}

// rateLog logs a warning at most every `every`, so a condition that goes
// on does not flood the log.
type rateLog struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

func (l *rateLog) warn(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < l.every {
		l.mu.Unlock()
		return
	}
	l.last = now
	l.mu.Unlock()
	l.log.Warn(msg, args...)
}

// skipLog counts skipped lines and logs a sample of them at most every 10 s
// per reason, so a flood of bad lines cannot flood the log.
type skipLog struct {
	log     *slog.Logger
	metrics *Metrics
	sampled sync.Map // reason -> time of the last sample logged
}

func (l *skipLog) skip(err error, line string) {
	reason := "unknown"
	if se, ok := IsSkip(err); ok {
		reason = se.Reason
	}
	l.metrics.Skipped.WithLabelValues(reason).Inc()
	now := time.Now()
	if last, ok := l.sampled.Load(reason); ok && now.Sub(last.(time.Time)) < 10*time.Second {
		return
	}
	l.sampled.Store(reason, now)
	l.log.Warn("skipped log line", "reason", reason, "err", err.Error(), "sample", clip.String(line, 256))
}

package loki

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/authguard/authguard/detector"
)

// sweep re-reads, with query_range, what reached Loki since the last sweep
// and delivers what the tail missed; it returns how many. A failed sweep is retried from the
// same place at the next tick; the lag metric shows how far behind it is.
func (t *Tail) sweep(ctx context.Context, h http.Header, out chan<- detector.Event) int {
	until := time.Now().Add(-t.cfg.SweepDelay).UnixNano()
	from := t.stage.dedup.start(t.sweptUntil.Load())
	if until <= from {
		return 0
	}
	n, err := t.catchUp(ctx, h, from, until, fromSweep, out)
	if err != nil {
		if ctx.Err() == nil {
			t.metrics.Sweeps.WithLabelValues("failure").Inc()
			t.recovered.warn("loki sweep failed; retrying at the next one", "err", err.Error())
		}
		t.advance(0)
		return n
	}
	t.metrics.Sweeps.WithLabelValues("success").Inc()
	t.advance(until)
	if n > 0 {
		t.metrics.Recovered.Add(float64(n))
		t.recovered.warn("the live tail missed entries; the sweeper read them with query_range", "entries", n)
	}
	return n
}

// poll reads by query_range alone, every SweepInterval, while the rate is
// more than a tail carries. Each poll reads from SweepDelay behind the last
// one (entries arrive a little after their timestamps) to past now.
func (t *Tail) poll(ctx context.Context, out chan<- detector.Event, connected func()) error {
	defer func() {
		if !t.polling.Load() {
			t.metrics.Polling.Set(0)
		}
	}()
	h, err := t.header()
	if err != nil {
		return err
	}
	tick := time.NewTicker(t.cfg.SweepInterval)
	defer tick.Stop()
	windowStart, read := time.Now(), 0
	calmSince := time.Time{}
	for {
		at := time.Now()
		n, err := t.catchUp(ctx, h, t.stage.dedup.start(t.sweptUntil.Load()), at.Add(futureGrace).UnixNano(), fromSweep, out)
		if err != nil {
			t.metrics.Sweeps.WithLabelValues("failure").Inc()
			return err
		}
		t.metrics.Sweeps.WithLabelValues("success").Inc()
		t.advance(at.Add(-t.cfg.SweepDelay).UnixNano())
		connected()
		read += n
		if elapsed := at.Sub(windowStart); elapsed >= rateWindow {
			rate := float64(read) / elapsed.Seconds()
			windowStart, read = at, 0
			switch {
			case rate >= float64(t.cfg.TailMaxRate)/2:
				calmSince = time.Time{}
			case calmSince.IsZero():
				calmSince = at
			case at.Sub(calmSince) >= tailAgainCalm:
				t.log.Info("the rate is down to what a loki tail carries; tailing again", "rate_per_s", int(rate))
				t.polling.Store(false)
				return errSwitch
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// recoverDropped re-reads, with query_range, the span of entries Loki
// dropped for this tail.
func (t *Tail) recoverDropped(ctx context.Context, h http.Header, f *frame, out chan<- detector.Event) error {
	lo, hi := int64(0), int64(0)
	for _, s := range f.Streams {
		for _, v := range s.Values {
			if ts, err := strconv.ParseInt(v[0], 10, 64); err == nil {
				if lo == 0 || ts < lo {
					lo = ts
				}
				hi = max(hi, ts)
			}
		}
	}
	for _, d := range f.DroppedEntries {
		ts, err := strconv.ParseInt(d.Timestamp, 10, 64)
		if err != nil {
			continue
		}
		if lo == 0 || ts < lo {
			lo = ts
		}
		hi = max(hi, ts)
	}
	t.metrics.Dropped.Add(float64(len(f.DroppedEntries)))
	t.log.Warn("loki dropped entries for this tail; re-reading them", "count", len(f.DroppedEntries))
	if lo == 0 {
		return nil
	}
	// Loki lists at most 1,000 dropped entries a frame: the span may be
	// wider than what it names, so the sweeper's mark is not moved, and
	// the next sweep reads the rest.
	_, err := t.catchUp(ctx, h, t.stage.dedup.start(lo), hi+1, fromSweep, out)
	return err
}

// catchUp delivers every entry in [from, until) with query_range, oldest
// first, a page at a time, and returns how many were new. Each page starts
// at the last timestamp of the one before (start is inclusive), so entries
// sharing that nanosecond are read again and dropped as repeats rather than
// skipped.
func (t *Tail) catchUp(ctx context.Context, h http.Header, from, until int64, src source, out chan<- detector.Event) (int, error) {
	delivered := 0
	for from < until {
		q := url.Values{"query": {t.query.Remote}, "start": {strconv.FormatInt(from, 10)}, "end": {strconv.FormatInt(until, 10)},
			"limit": {strconv.Itoa(t.cfg.PageLimit)}, "direction": {"forward"}}
		body, err := t.queryRange(ctx, h, q, "catch-up query")
		if err != nil {
			return delivered, err
		}
		status, result, err := decodeQueryResult(body)
		if err != nil || status != "success" {
			return delivered, fmt.Errorf("catch up from %s: undecodable answer (status %q): %v", t.cfg.URL, status, err)
		}
		t.metrics.CatchUpPages.Inc()
		n, last := 0, from
		for _, s := range result {
			n += len(s.Values)
			for _, v := range s.Values {
				if ts, err := strconv.ParseInt(v[0], 10, 64); err == nil && ts > last {
					last = ts
				}
			}
		}
		k, err := t.deliver(ctx, result, src, out)
		delivered += k
		if err != nil {
			return delivered, err
		}
		if n < t.cfg.PageLimit {
			return delivered, nil
		}
		if last == from {
			// A whole page at one nanosecond: more than PageLimit entries
			// share it, and paging cannot get past them.
			t.log.Error("more entries at one timestamp than a query page holds; some may be missed", "ts", from, "page_limit", t.cfg.PageLimit)
			last++
		}
		from = last
	}
	return delivered, nil
}

// Read delivers every entry of the query in [from, until) with
// query_range, oldest first, each once, as the backfill at start does: a
// backtest replays what it reads. It returns how many it delivered.
func (t *Tail) Read(ctx context.Context, from, until time.Time, out chan<- detector.Event) (int, error) {
	h, err := t.header()
	if err != nil {
		return 0, err
	}
	return t.catchUp(ctx, h, from.UnixNano(), until.UnixNano(), fromCatchUp, out)
}

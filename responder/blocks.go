package responder

import (
	"context"
	"fmt"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/backoff"
)

// runBlocks carries out queued decisions in two stages, so that Redis is
// not kept waiting for the evidence and pages of the last batch: this
// goroutine takes a batch from the queue and writes it (retrying until the
// store takes it), a finisher writes its evidence to the log and queues its
// pages. Once ctx ends, what is queued is still written within
// ShutdownGrace; what the grace leaves is counted and logged.
func (r *Responder) runBlocks(ctx context.Context) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	context.AfterFunc(ctx, func() { time.AfterFunc(r.opts.ShutdownGrace, cancel) })
	written := make(chan job, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for j := range written {
			for i, it := range j.batch {
				r.done(it, j.reqs[i], j.results[i])
			}
		}
	}()
	defer func() { close(written); <-finished }()
	for {
		var batch []item
		select {
		case <-ctx.Done():
			// The rest of the queue, without waiting for more.
			for batch = r.drain(nil); len(batch) > 0; batch = r.drain(nil) {
				if !r.write(wctx, batch, written) {
					r.lost(batch)
					return
				}
			}
			return
		case it := <-r.blocks:
			batch = r.drain(append(make([]item, 0, min(1+len(r.blocks), maxBatch)), it))
		}
		if !r.write(wctx, batch, written) {
			r.lost(batch)
			return
		}
	}
}

// job is a batch of decisions written, on its way to the finisher.
type job struct {
	batch   []item
	reqs    []Request
	results []Result
}

// write writes a batch, retrying with backoff until the store takes it,
// and passes it on; it is false when ctx ended first.
func (r *Responder) write(ctx context.Context, batch []item, written chan<- job) bool {
	j := job{batch: batch, reqs: make([]Request, len(batch))}
	for i, it := range batch {
		j.reqs[i] = r.request(it)
	}
	if !r.send(ctx, &j) {
		return false
	}
	written <- j
	return true
}

// lost counts and logs the decisions the shutdown grace left unwritten:
// batch and whatever is still queued.
func (r *Responder) lost(batch []item) {
	n := len(batch)
	for b := r.drain(nil); len(b) > 0; b = r.drain(nil) {
		n += len(b)
	}
	r.metrics.unwritten.Add(float64(n))
	r.opts.Log.Error("shutdown grace ran out with decisions not written; a restarted daemon re-decides them from Loki", "decisions", n)
}

// drain adds queued decisions to batch, up to maxBatch, without waiting.
func (r *Responder) drain(batch []item) []item {
	defer func() { r.metrics.queue.Set(float64(len(r.blocks))) }()
	for len(batch) < maxBatch {
		select {
		case it := <-r.blocks:
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// request says what to do about a decision.
func (r *Responder) request(it item) Request {
	// The ID is the decision's identity, the same whenever it is made: a
	// daemon that restarts and re-reads the window decides it again, and
	// the store then knows it has it.
	req := Request{Decision: it.d, Act: ActAlert, ID: fmt.Sprintf("%s|%s|%d|%d", it.d.Rule, it.d.Key, it.d.Time.UnixNano(), it.d.Count), DecidedAt: it.decidedAt}
	if it.d.Kind != detector.KindBlock {
		return req
	}
	switch {
	case NeverBlocked(it.d.IP, r.opts.NeverBlock) != "":
		req.Act = ActRefuse
	case it.d.DryRun || r.opts.DryRun:
		req.Act = ActDryRun
	case it.d.Renewal:
		req.Act = ActRenew
	default:
		req.Act = ActBlock
	}
	return req
}

// send hands a job to the store, retrying with backoff until it is taken or
// ctx ends.
func (r *Responder) send(ctx context.Context, j *job) bool {
	if r.opts.Store == nil {
		j.results = make([]Result, len(j.reqs))
		return true
	}
	for attempt := 0; ; attempt++ {
		results, err := r.opts.Store.Write(ctx, j.reqs)
		if err == nil {
			j.results = results
			return true
		}
		r.metrics.blockErrors.Inc()
		wait := backoff.Jitter(attempt, 100*time.Millisecond, 5*time.Second)
		r.opts.Log.Warn("writing decisions failed; retrying", "decisions", len(j.reqs), "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// done finishes one decision after the store took it: evidence in the log,
// the detector told of a clearance, the page queued.
func (r *Responder) done(it item, req Request, res Result) {
	a := Action{Decision: it.d, At: r.opts.Now(), Act: req.Act, Incident: res.Incident}
	switch {
	case res.Outcome == AlreadyWritten:
		r.metrics.repeated.Inc()
		r.opts.Log.Debug("decision already carried out", "ip", it.d.Key, "rule", it.d.Rule)
		return
	case res.Outcome == Cleared:
		r.metrics.cleared.Inc()
		r.opts.Log.Info("operator had cleared the IP; giving it a clean slate", "ip", it.d.Key, "rule", it.d.Rule)
		if r.opts.Cleared != nil {
			again := it.ev
			r.opts.Cleared(detector.Reset{IP: it.d.IP, Seq: it.seq, Again: &again})
		}
		return
	case req.Act == ActRefuse:
		r.metrics.refused.Inc()
		why := NeverBlocked(it.d.IP, r.opts.NeverBlock)
		r.opts.Log.Warn("refused to block an address that is never blocked", "ip", it.d.Key, "rule", it.d.Rule, "why", why)
	case req.Act.Blocks() && res.Outcome == Expired:
		a.Act = ActExpire
	case req.Act.Blocks():
		r.metrics.blocks.Inc()
		a.Expires = it.decidedAt.Add(it.d.TTL)
	}
	r.evidence(a)
	if it.d.Alert && (!it.d.Renewal || it.d.Escalation) && r.opts.Notifier != nil {
		if err := r.opts.Notifier.Notify(context.Background(), a); err != nil {
			r.metrics.notifyErrors.Inc()
			r.opts.Log.Error("page not taken", "rule", it.d.Rule, "key", it.d.Key, "err", err)
		} else {
			r.metrics.notifications.Inc()
		}
	}
}

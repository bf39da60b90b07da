package responder

import (
	"context"
	"fmt"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/backoff"
)

// runBlocks carries out queued decisions in three stages, so that the
// store is kept waiting for neither the next batch nor the evidence and
// pages of the last: this goroutine takes a batch from the queue, says
// what to do about each decision and has the store ready it, a writer
// writes it (retrying until the
// store takes it), a finisher writes its evidence to the log and queues
// its pages. Once ctx ends, what is queued is still written within
// ShutdownGrace; what the grace leaves is counted and logged.
func (r *Responder) runBlocks(ctx context.Context) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	context.AfterFunc(ctx, func() { time.AfterFunc(r.opts.ShutdownGrace, cancel) })
	jobs := make(chan job)
	written := make(chan job, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for j := range written {
			for i, it := range j.batch {
				r.done(it, j.reqs[i], j.results[i])
			}
			r.progress.add(uint64(len(j.batch)))
		}
	}()
	go func() {
		defer close(written)
		r.writer(wctx, jobs, written)
	}()
	defer func() { close(jobs); <-finished }()
	for {
		select {
		case <-ctx.Done():
			// The rest of the queue, without waiting for more.
			for batch := r.drain(nil); len(batch) > 0; batch = r.drain(nil) {
				jobs <- r.job(batch)
			}
			return
		case it := <-r.blocks:
			jobs <- r.job(r.drain(append(make([]item, 0, min(1+len(r.blocks), maxBatch)), it)))
		}
	}
}

// job is a batch of decisions on its way through the stages.
type job struct {
	batch   []item
	reqs    []Request
	ready   Batch // reqs as the store readied them
	results []Result
}

func (r *Responder) job(batch []item) job {
	j := job{batch: batch, reqs: make([]Request, len(batch))}
	for i, it := range batch {
		j.reqs[i] = r.request(it)
	}
	if r.opts.Store != nil {
		j.ready = r.opts.Store.Prepare(j.reqs)
	}
	return j
}

// writer writes each job, retrying with backoff until the store takes it,
// and passes it on. When ctx ends (the shutdown grace ran out) what was not
// written is counted and logged.
func (r *Responder) writer(ctx context.Context, jobs <-chan job, written chan<- job) {
	lost := 0
	for j := range jobs {
		if lost > 0 {
			lost += len(j.batch)
			continue
		}
		if !r.send(ctx, &j) {
			lost = len(j.batch)
			continue
		}
		written <- j
	}
	if lost > 0 {
		r.metrics.unwritten.Add(float64(lost))
		r.opts.Log.Error("shutdown grace ran out with decisions not written; a restarted daemon re-decides them from Loki", "decisions", lost)
	}
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
	switch {
	case it.d.Kind == detector.KindProtect:
		req.ID += "|protect"
		req.Act = ActProtect
		if it.d.DryRun || r.opts.DryRun {
			req.Act = ActDryRun
		}
		return req
	case it.d.Kind != detector.KindBlock:
		return req
	}
	switch {
	case NeverBlocked(it.d.Net, r.opts.NeverBlock) != "":
		req.Act = ActRefuse
	case it.d.DryRun || r.opts.DryRun:
		req.Act = ActDryRun
	case it.d.Restored:
		req.Act = ActRestore
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
	if j.ready == nil {
		j.results = make([]Result, len(j.reqs))
		return true
	}
	for attempt := 0; ; attempt++ {
		results, err := j.ready.Write(ctx)
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
			r.opts.Cleared(detector.Reset{IP: it.d.Net.Addr(), Seq: it.seq, Again: &again})
		}
		return
	case req.Act == ActRefuse:
		r.metrics.refused.Inc()
		why := NeverBlocked(it.d.Net, r.opts.NeverBlock)
		r.opts.Log.Warn("refused to block an address that is never blocked", "ip", it.d.Key, "rule", it.d.Rule, "why", why)
	case req.Act == ActProtect && res.Outcome == Expired:
		a.Act = ActExpire
	case req.Act == ActProtect:
		r.metrics.protected.Inc()
		a.Expires = it.decidedAt.Add(it.d.TTL)
	case req.Act.Blocks() && res.Outcome == Expired:
		a.Act = ActExpire
	case req.Act.Blocks():
		r.metrics.blocks.Inc()
		if req.Act != ActRestore && !it.ev.CatchUp && !it.ev.Time.IsZero() {
			r.metrics.eventToBlock.Observe(max(a.At.Sub(it.ev.Time).Seconds(), 0))
		}
		if req.Act == ActRestore {
			r.metrics.restored.Inc()
		}
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

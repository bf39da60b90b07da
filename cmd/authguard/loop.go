package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authguard/authguard/cmd/internal/buildinfo"
	"github.com/authguard/authguard/cmd/internal/leader"
	"github.com/authguard/authguard/cmd/internal/logflag"
	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/clip"
)

// run serves the admin endpoints and runs the loop until ctx ends: at once,
// or, with leader election, while this replica holds the Lease.
func (d *daemon) run(ctx context.Context) error {
	defer d.close()
	if d.elect == nil {
		d.leading.Store(true) // before the listeners: pushes are taken at once
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Each audience has its listener and sees only its endpoints.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	if d.lifecycle {
		mux.Handle("POST /-/reload", d.reloader.handler(ctx, d))
	}
	if d.pushLn != nil {
		push := http.NewServeMux()
		push.HandleFunc("POST /loki/api/v1/push", func(w http.ResponseWriter, r *http.Request) {
			if !d.leading.Load() {
				http.Error(w, "standby: this authguard replica does not hold the lease; push to the leader", http.StatusServiceUnavailable)
				return
			}
			d.receiver.ServeHTTP(w, r)
		})
		srv := d.limits.Server(push, false, d.log)
		go srv.Serve(d.pushLn)
		defer srv.Close()
	}
	if d.slackLn != nil && d.signingSecret != "" {
		slackMux := http.NewServeMux()
		slackMux.Handle("POST /slack/interactions", d.notifier.Interactions(d.signingSecret, storeOperator{d.store, d.neverBlock}))
		srv := d.limits.Server(slackMux, false, d.log)
		go srv.Serve(d.slackLn)
		defer srv.Close()
	}
	go d.reloader.run(ctx, d)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !d.leading.Load():
			fmt.Fprintln(w, "ready: standby, another replica holds the lease")
		case d.tail != nil && d.tail.Ready(time.Now()) != nil:
			http.Error(w, "not ready: "+d.tail.Ready(time.Now()).Error(), http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	srv := d.limits.Server(mux, false, d.log)
	go srv.Serve(d.listener)
	defer srv.Close()

	// Slack outlives the loop by a little: the pages of the decisions the
	// responder still writes at shutdown are sent too.
	slackCtx, stopSlack := context.WithCancel(context.Background())
	defer stopSlack()
	slackDone := make(chan struct{})
	go func() { d.notifier.Run(slackCtx); close(slackDone) }()
	d.log.Info("authguard running", "version", buildinfo.String("authguard"), "admin", d.listener.Addr().String(), "push", addrOf(d.pushLn), "slack", addrOf(d.slackLn), "leader_election", d.elect != nil)
	var err error
	if d.elect == nil {
		err = d.loop(ctx)
	} else {
		var loopErr error
		err = leader.Run(ctx, d.elect.client, d.elect.cfg, d.log, func(ctx context.Context) {
			if loopErr = d.takeOver(); loopErr != nil {
				return
			}
			d.leading.Store(true)
			loopErr = d.loop(ctx)
			d.leading.Store(false)
		})
		if loopErr != nil && !errors.Is(loopErr, context.Canceled) {
			err = loopErr
		}
	}
	stopSlack()
	<-slackDone
	return d.stopped(ctx, err)
}

// stopped logs why the daemon stopped (the signal, or the error) and
// returns the error, a cancellation being none.
func (d *daemon) stopped(ctx context.Context, err error) error {
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	logflag.Stopped(ctx, d.log, "authguard", err)
	return err
}

// takeOver readies a standby to lead: the rules file may have changed
// while it stood by, so it is read again.
func (d *daemon) takeOver() error {
	if d.rules == "" {
		return nil
	}
	set, err := loadRules(d.rules, d.reloader.budget)
	if err == nil {
		err = d.apply(set.Config)
	}
	if err != nil {
		return fmt.Errorf("taking over: %w", err)
	}
	return nil
}

// apply replaces the engine with one running cfg, carrying the windows
// over (detector.Engine.Reload), and keeps the eviction count going. It
// runs on the detector's goroutine, or before it runs.
func (d *daemon) apply(cfg detector.Config) error {
	before := d.detect.Engine.Stats().Evictions
	next, err := d.detect.Engine.Reload(cfg)
	if err != nil {
		return err
	}
	d.evictedBefore += before - next.Stats().Evictions
	d.detect.Swap(next)
	d.reloader.loaded.Set(float64(len(cfg.Rules)))
	return nil
}

// loop reads events, decides and acts until ctx ends: the tail (whose
// start-up backfill rebuilds the windows), the detector and the responder.
func (d *daemon) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The responder stops after the detector, so that every decision
	// submitted is in its queue when it flushes.
	respCtx, stopResp := context.WithCancel(context.WithoutCancel(ctx))
	defer stopResp()
	waitResp := d.resp.Start(respCtx)
	events := d.events
	// The checkpoint comes before the first event; what the Loki reader
	// re-reads from its start is counted from Loki, not from it.
	now, from := time.Now(), time.Time{}
	if d.tail != nil {
		if from = d.tail.From(now); !from.Before(now) {
			from = time.Time{} // no re-read: the checkpoint holds it all
		}
	}
	d.checkpoints.load(ctx, d.detect.Engine, from)
	tailDone := make(chan struct{})
	if d.tail != nil {
		go func() { d.tail.RunFrom(ctx, cmp.Or(from, now), events); close(tailDone) }()
	} else {
		close(tailDone)
	}
	// Unblocks through authguard (the CLI, a Slack button) reset the
	// detector's window for the IP, like the runbook's DEL of both keys.
	go d.store.Subscribe(ctx, func(ev blockset.Event) {
		target, err := blockset.ParseTarget(ev.IP)
		if ev.Op != "unblock" || err != nil {
			return
		}
		if !strings.HasPrefix(ev.By, "slack:") { // a button shows its own press
			d.notifier.Unblocked(target, ev.By)
		}
		d.reset(detector.Reset{IP: target.Addr()})
	}, nil)
	go d.publishStats(ctx)
	go d.watchEpoch(ctx)
	go d.checkpoints.run(ctx, func() *detector.Engine { return d.detect.Engine }, d.reloader.tasks)
	err := d.detect.Run(ctx, events, d.reloader.tasks)
	cancel()
	<-tailDone
	// Events taken but not yet counted are counted before the last
	// checkpoint: a push answered 204 is never forgotten on a SIGTERM.
	drainCtx, stopDrain := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if n, derr := d.detect.Drain(drainCtx, events); derr != nil {
		d.log.Warn("events taken before the stop could not all be decided", "counted", n, "err", derr.Error())
	}
	stopDrain()
	d.checkpoints.final(d.detect.Engine)
	stopResp()
	waitResp()
	return err
}

// reset hands the detector an address to start again.
func (d *daemon) reset(r detector.Reset) {
	if !d.detect.Reset(r) {
		d.log.Warn("too many resets waiting for the detector; this one is dropped (the next renewal finds the address cleared and resets it)", "ip", r.IP.String())
	}
}

// publishStats copies the engine's figures for the metrics every second,
// on the detector's goroutine, which owns the engine.
func (d *daemon) publishStats(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	task := func() {
		st := d.detect.Engine.Stats()
		d.trackedKeys.Store(uint64(st.TrackedKeys))
		d.evictions.Store(d.evictedBefore + st.Evictions)
		d.late.Store(st.Late)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			select {
			case d.reloader.tasks <- task:
			case <-ctx.Done():
				return
			}
		}
	}
}

// epochCheck is how often the daemon looks for Redis having lost its data.
const epochCheck = 2 * time.Second

// watchEpoch keeps the epoch key in Redis; when it is gone, Redis lost its
// data (a restart without persistence, a failover to an empty replica), and
// every block the detector knows to stand is written again with what is
// left of it, its tally and its metadata. The key is set again only once
// they are written, so that gateways, which keep enforcing what they know
// while it is missing, never see the emptied Redis as the truth.
func (d *daemon) watchEpoch(ctx context.Context) {
	tick := time.NewTicker(epochCheck)
	defer tick.Stop()
	first := true
	var restoring atomic.Bool
	for {
		ok, err := d.store.HasEpoch(ctx)
		switch {
		case err != nil || ok || restoring.Load():
		case first: // a new Redis, or one lost while no daemon ran
			d.store.SetEpoch(ctx, time.Now())
		default:
			d.stateLost.Inc()
			restoring.Store(true)
			select {
			case d.reloader.tasks <- func() { d.restore(ctx, &restoring) }:
			case <-ctx.Done():
				return
			}
		}
		if err == nil {
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// restore submits every block that stands again; it runs on the detector's
// goroutine, which owns the engine. Once they are written the epoch is set.
func (d *daemon) restore(ctx context.Context, restoring *atomic.Bool) {
	ds := d.detect.Engine.ActiveBlocks(time.Now())
	d.log.Warn("redis has lost its data (the epoch key is gone): writing the standing blocks again", "blocks", len(ds))
	for _, dec := range ds {
		if d.resp.Submit(ctx, dec, detector.Event{}, 0) != nil {
			return
		}
	}
	go func() {
		defer restoring.Store(false)
		if d.resp.Flush(ctx) == nil && d.store.SetEpoch(ctx, time.Now()) == nil {
			d.log.Info("standing blocks written again; redis holds the state once more", "blocks", len(ds))
		}
	}()
}

// observed counts an event the detector took, and logs a sample of those
// stamped ahead of the clock.
func (d *daemon) observed(ev detector.Event, future bool) {
	d.processed.Inc()
	if !future {
		return
	}
	d.future.Add(1)
	if now := time.Now(); now.Sub(d.futureLogged) >= 10*time.Second {
		d.futureLogged = now
		d.log.Warn("event stamped ahead of the clock; counted at the clock's time", "client_ip", ev.IP.String(),
			"stamped", ev.Time.UTC().Format(time.RFC3339Nano), "sample", clip.String(ev.Line, 256))
	}
}

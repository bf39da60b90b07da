package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/rules"
)

// reloader re-reads the rules file on SIGHUP, on POST /-/reload and when the
// file's content changes (Kubernetes swaps a ConfigMap's files through a
// symlink, so content is compared, not events). A new rule set is built
// completely and swapped in by the detect loop; a broken one is logged with
// its FILE:LINE:COL, counted, and the old rules keep running.
type reloader struct {
	path   string   // empty: the embedded default rules, never reloaded
	budget int64    // the detector's memory budget (0: none)
	reads  []string // the audit fields the parser reads beyond the fixed ones
	// tasks run on the detector's goroutine, which swaps the engine.
	tasks    chan func()
	reloads  *prometheus.CounterVec
	loaded   prometheus.Gauge
	interval time.Duration
}

func newReloader(path string, budget int64, reg prometheus.Registerer) *reloader {
	r := &reloader{path: path, budget: budget, tasks: make(chan func()), interval: 2 * time.Second,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_rules_reloads_total", Help: "Rules reloads, by result (success, failure: the old rules keep running)."}, []string{"result"}),
		loaded:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_rules_loaded", Help: "Rules in force."})}
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("failure")
	reg.MustRegister(r.reloads, r.loaded)
	return r
}

// reload loads the file and hands the set to the detect loop.
func (r *reloader) reload(ctx context.Context, d *daemon, why string) error {
	if r.path == "" {
		return errors.New("authguard runs the embedded default rules; give --rules FILE to reload")
	}
	set, err := loadRules(r.path, r.budget)
	if err == nil {
		err = r.readable(set)
	}
	if err == nil && !d.leading.Load() {
		// A standby runs no engine: the file is checked now and read
		// again when this replica takes over.
		if err = detector.Validate(set.Config); err == nil {
			r.reloads.WithLabelValues("success").Inc()
			d.log.Info("rules checked; a standby applies them when it takes over", "trigger", why, "file", r.path)
			return nil
		}
	}
	if err == nil {
		done := make(chan error, 1)
		select {
		case r.tasks <- func() { done <- d.apply(set.Config) }:
			err = <-done
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		r.reloads.WithLabelValues("failure").Inc()
		d.log.Error("rules reload failed; the old rules keep running", "trigger", why, "err", err.Error())
		return err
	}
	r.reloads.WithLabelValues("success").Inc()
	d.log.Info("rules reloaded", "trigger", why, "file", r.path, "rules", len(set.Config.Rules))
	return nil
}

// readable refuses a rule set that groups by or counts a field the
// parser does not read: its rules would never count anything.
func (r *reloader) readable(set *rules.Set) error {
	for _, f := range set.Fields() {
		if !slices.Contains(r.reads, f) {
			return fmt.Errorf("the rules use the audit field %s, which this daemon does not read: add it to --audit-fields and restart", f)
		}
	}
	return nil
}

// run serves the triggers until ctx ends.
func (r *reloader) run(ctx context.Context, d *daemon) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last := r.digest()
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload(ctx, d, "SIGHUP")
			last = r.digest()
		case <-t.C:
			if now := r.digest(); r.path != "" && now != nil && !bytes.Equal(now, last) {
				last = now
				r.reload(ctx, d, "file changed")
			}
		}
	}
}

func (r *reloader) digest() []byte {
	if r.path == "" {
		return nil
	}
	b, err := os.ReadFile(r.path)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// handler serves POST /-/reload: 200, or 400 with the error.
func (r *reloader) handler(ctx context.Context, d *daemon) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if err := r.reload(ctx, d, "POST /-/reload"); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "rules reloaded")
	}
}

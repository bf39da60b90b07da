package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/backoff"
	"github.com/authguard/authguard/responder/redisblock"
)

// checkpoints keep the detector's windows in Redis across restarts: saved
// every interval and when the loop stops, loaded when it starts, before
// the first event is counted. The engine is encoded on the detector's
// goroutine (30 ms for a million keys); Redis is written on another, so a
// slow Redis never holds detection up.
type checkpoints struct {
	store    *redisblock.Store
	interval time.Duration // 0: none
	log      *slog.Logger

	saves       *prometheus.CounterVec
	bytes, keys prometheus.Gauge
	lastSuccess prometheus.Gauge
	loaded      prometheus.Gauge

	writing chan struct{} // holds a token while a save is on its way to Redis
	failing atomic.Bool   // the last save failed (logged once until one works)
}

// loadAttempts and loadTimeout bound how long a start waits for Redis to
// hand its checkpoint over: events wait meanwhile.
const (
	loadAttempts = 5
	loadTimeout  = 5 * time.Second
)

func newCheckpoints(store *redisblock.Store, interval time.Duration, log *slog.Logger, reg prometheus.Registerer) *checkpoints {
	c := &checkpoints{store: store, interval: interval, log: log, writing: make(chan struct{}, 1),
		saves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_checkpoint_saves_total",
			Help: "Checkpoints of the detector's windows written to Redis, by result (success, failure, or skipped while the last one was still being written)."}, []string{"result"}),
		bytes:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_checkpoint_bytes", Help: "Size of the last checkpoint written."}),
		keys:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_checkpoint_keys", Help: "Tracked keys in the last checkpoint written."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_checkpoint_last_success_timestamp_seconds", Help: "When a checkpoint was last written to Redis."}),
		loaded:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_checkpoint_loaded_keys", Help: "Tracked keys the detector took from the checkpoint when the loop last started."}),
	}
	for _, r := range []string{"success", "failure", "skipped"} {
		c.saves.WithLabelValues(r)
	}
	reg.MustRegister(c.saves, c.bytes, c.keys, c.lastSuccess, c.loaded)
	return c
}

// load puts the checkpoint in Redis into e. replayFrom is where the Loki
// reader starts re-reading (zero without one): what it re-reads is not
// taken from the checkpoint. Redis is tried a few times; without it the
// detector starts empty, and says so.
func (c *checkpoints) load(ctx context.Context, e *detector.Engine, replayFrom time.Time) {
	if c.interval <= 0 {
		return
	}
	var data []byte
	var err error
	for attempt := range loadAttempts {
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		data, err = c.store.LoadCheckpoint(lctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff.Jitter(attempt, 200*time.Millisecond, 2*time.Second)):
		}
	}
	if err != nil {
		c.log.Error("the checkpoint could not be read from redis; the detector starts with empty windows", "err", err.Error())
		return
	}
	if data == nil {
		c.log.Info("no checkpoint in redis; the detector starts with empty windows")
		return
	}
	now := time.Now()
	got, err := e.Load(data, now, replayFrom)
	if err != nil {
		c.log.Error("the checkpoint in redis is refused; the detector starts with empty windows", "err", err.Error(), "bytes", len(data))
		return
	}
	c.loaded.Set(float64(got.Keys))
	attrs := []any{"keys", got.Keys, "saved", got.Saved.Format(time.RFC3339Nano), "age", now.Sub(got.Saved).Round(time.Millisecond).String()}
	if !replayFrom.IsZero() {
		attrs = append(attrs, "loki_rereads_from", replayFrom.UTC().Format(time.RFC3339Nano))
	}
	if len(got.Skipped) > 0 {
		attrs = append(attrs, "rules_not_loaded", got.Skipped)
		c.log.Warn("rules that count another way now start with empty windows", "rules", got.Skipped)
	}
	c.log.Info("counting on from the checkpoint", attrs...)
}

// run saves every interval until ctx ends, handing each save to the
// detector's goroutine through tasks.
func (c *checkpoints) run(ctx context.Context, engine func() *detector.Engine, tasks chan<- func()) {
	if c.interval <= 0 {
		return
	}
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		task := func() {
			select {
			case c.writing <- struct{}{}:
			default:
				c.saves.WithLabelValues("skipped").Inc()
				return
			}
			data, keys, ttl := c.encode(engine())
			go func() {
				defer func() { <-c.writing }()
				c.write(ctx, data, keys, ttl)
			}()
		}
		select {
		case tasks <- task:
		case <-ctx.Done():
			return
		}
	}
}

func (c *checkpoints) encode(e *detector.Engine) ([]byte, int, time.Duration) {
	data, keys := e.Checkpoint(nil, time.Now())
	return data, keys, e.Horizon()
}

// final saves once more as the loop stops (on SIGTERM, or losing the
// Lease), after any save still on its way; it runs where the engine is
// owned, the detector having stopped.
func (c *checkpoints) final(e *detector.Engine) {
	if c.interval <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case c.writing <- struct{}{}: // the periodic save in flight has ended
		defer func() { <-c.writing }()
	case <-ctx.Done():
		c.saves.WithLabelValues("failure").Inc()
		c.log.Warn("no checkpoint on the way out: the last periodic one is still being written")
		return
	}
	data, keys, ttl := c.encode(e)
	if c.write(ctx, data, keys, ttl) {
		c.log.Info("checkpoint saved on the way out", "keys", keys, "bytes", len(data))
	}
}

func (c *checkpoints) write(ctx context.Context, data []byte, keys int, ttl time.Duration) bool {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := c.store.SaveCheckpoint(wctx, data, ttl)
	if err != nil {
		c.saves.WithLabelValues("failure").Inc()
		if !c.failing.Swap(true) {
			c.log.Warn("the checkpoint could not be written to redis; retrying at the next one (a restart meanwhile counts from the last one written)", "err", err.Error())
		}
		return false
	}
	c.saves.WithLabelValues("success").Inc()
	c.bytes.Set(float64(len(data)))
	c.keys.Set(float64(keys))
	c.lastSuccess.SetToCurrentTime()
	if c.failing.Swap(false) {
		c.log.Info("checkpoints are written to redis again", "keys", keys, "bytes", len(data))
	}
	return true
}

package loki

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the source reads and skips.
type Metrics struct {
	Lines        prometheus.Counter
	Skipped      *prometheus.CounterVec
	Filtered     prometheus.Counter
	Duplicates   prometheus.Counter
	Reconnects   prometheus.Counter
	CatchUpPages prometheus.Counter
	Dropped      prometheus.Counter
	Recovered    prometheus.Counter
	Sweeps       *prometheus.CounterVec
	Lag          prometheus.Gauge
	SweepLag     prometheus.Gauge
	ReadDelay    prometheus.Histogram
	Connected    prometheus.Gauge
	Polling      prometheus.Gauge
}

// NewMetrics registers the source's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Lines:        prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_lines_total", Help: "Audit lines read from Loki and turned into events."}),
		Skipped:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_loki_lines_skipped_total", Help: "Lines read from Loki and skipped, by reason."}, []string{"reason"}),
		Filtered:     prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_lines_filtered_total", Help: "Lines Loki sent that the query's own stages (| json, label filters), checked by authguard, leave out."}),
		Duplicates:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_duplicates_total", Help: "Entries read twice (catch-up or sweep overlapping the tail) and delivered once."}),
		Reconnects:   prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_reconnects_total", Help: "Tail connections re-established after a close or error."}),
		CatchUpPages: prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_catchup_pages_total", Help: "query_range pages read to catch up, sweep or poll."}),
		Dropped:      prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_dropped_entries_total", Help: "Entries Loki reported as dropped for this tail (each gap is caught up)."}),
		Recovered:    prometheus.NewCounter(prometheus.CounterOpts{Name: "authguard_loki_recovered_lines_total", Help: "Entries the live tail never delivered that the sweeper read with query_range."}),
		Sweeps:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_loki_sweeps_total", Help: "query_range sweeps behind the tail (and polls), by result."}, []string{"result"}),
		Lag:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_lag_seconds", Help: "Now minus the newest entry time read."}),
		SweepLag:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_sweep_lag_seconds", Help: "Now minus the time up to which every entry in Loki is known to have been read."}),
		ReadDelay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authguard_loki_read_delay_seconds", Help: "Time from an entry's timestamp to its reading (start-up backfill not included).",
			Buckets: delayBuckets}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_tail_connected", Help: "1 while the websocket tail is open."}),
		Polling:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "authguard_loki_polling", Help: "1 while the reader polls query_range alone because the rate is above what a tail carries."}),
	}
	for _, r := range []string{SkipTooLong, SkipNotJSON, SkipNoAction, SkipNoClientIP, SkipBadClientIP, SkipBadTime, SkipSigUnsigned, SkipSigUnknown, SkipSigBad, SkipSigReplayed} {
		m.Skipped.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.Sweeps.WithLabelValues(r)
	}
	reg.MustRegister(m.Lines, m.Skipped, m.Filtered, m.Duplicates, m.Reconnects, m.CatchUpPages, m.Dropped, m.Recovered, m.Sweeps,
		m.Lag, m.SweepLag, m.ReadDelay, m.Connected, m.Polling)
	return m
}

// delayBuckets are the buckets of the delays from an entry's timestamp to
// authguard having it, read or pushed.
var delayBuckets = []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300}

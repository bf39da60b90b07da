// Package gomem gives a binary the Go memory limit of its container, so
// that the garbage collector works harder as the limit nears instead of the
// kernel killing the pod.
package gomem

import (
	"errors"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/prometheus/client_golang/prometheus"
)

// Ratio is the part of the container's memory limit given to Go; the rest
// is for what the runtime does not count (stacks, the binary, the kernel's
// buffers).
const Ratio = 0.9

// Set sets the Go memory limit to Ratio of the container's (cgroup v2 or
// v1), unless GOMEMLIMIT is set, and returns the limit in force: 0 when
// there is none.
func Set(log *slog.Logger) int64 {
	_, err := memlimit.Set(memlimit.WithRatio(Ratio), memlimit.WithProvider(memlimit.FromCgroup))
	if err != nil && !errors.Is(err, memlimit.ErrNoLimit) {
		log.Debug("no container memory limit found", "err", err)
	}
	limit := Limit()
	if limit > 0 {
		log.Info("go memory limit", "bytes", limit, "mib", limit>>20)
	}
	return limit
}

// Limit is the Go memory limit in force: 0 when there is none.
func Limit() int64 {
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		return l
	}
	return 0
}

// Gauge reports the limit under the binary's name for it (opts.Name).
func Gauge(opts prometheus.GaugeOpts) prometheus.Collector {
	opts.Help = "The Go memory limit (GOMEMLIMIT, or 90 % of the container's memory limit); 0 when there is none."
	return prometheus.NewGaugeFunc(opts, func() float64 { return float64(Limit()) })
}

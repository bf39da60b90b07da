//go:build real

package loki_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/detector/loki/lokitest"
)

// The read soak against a real Loki (make test-real): every line pushed at
// 200, 2,000 and 20,000 lines/s is read exactly once.
func TestRealLokiEveryLineOnceAtEveryRate(t *testing.T) {
	r, err := lokitest.StartReal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	d := soakDuration(t, 30*time.Second)
	for _, rate := range []int{200, 2000, 20000} {
		t.Run(strconv.Itoa(rate)+" lines/s", func(t *testing.T) {
			res := readSoak(t, r.URL, r.Tenant, rate, d, loki.Config{})
			t.Logf("real Loki, %d lines/s for %v: %v", rate, d, res)
			if res.lost > 0 || res.duplicated > 0 {
				t.Errorf("%d lost, %d duplicated", res.lost, res.duplicated)
			}
		})
	}
}

// Against the real Loki the live tail alone, without the sweeper (and so
// without polling), loses lines at 20,000 lines/s: the soak above could
// fail. Whether one run loses any depends on the machine's load (one CI
// run in several lost none), so up to three runs are made: the test fails
// only when none of them lost a line.
func TestRealLokiTailAloneLosesLines(t *testing.T) {
	r, err := lokitest.StartReal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	for run := 1; run <= 3; run++ {
		res := readSoak(t, r.URL, r.Tenant, 20000, 15*time.Second, loki.Config{NoSweep: true})
		t.Logf("real Loki, 20000 lines/s, tail alone, run %d: %v", run, res)
		if res.lost > 0 {
			return
		}
	}
	t.Error("the tail alone lost nothing at 20,000 lines/s in three runs")
}

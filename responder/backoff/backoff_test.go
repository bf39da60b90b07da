package backoff

import (
	"testing"
	"time"
)

// Delays double from base, stay between half and all of their step, and
// stop growing at the ceiling however many attempts have failed.
func TestJitterDoublesUpToTheCeiling(t *testing.T) {
	for attempt, step := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		step *= time.Millisecond
		for range 100 {
			if d := Jitter(attempt, 100*time.Millisecond, time.Second); d < step/2 || d > step {
				t.Fatalf("attempt %d: %s, want within [%s, %s]", attempt, d, step/2, step)
			}
		}
	}
	if d := Jitter(1000, time.Second, time.Minute); d < 30*time.Second || d > time.Minute {
		t.Errorf("attempt 1000: %s (overflow)", d)
	}
}

// Package backoff is the one retry delay every retry loop of both binaries
// uses: full-jitter exponential backoff, so that many clients retrying
// after one outage spread out instead of arriving together.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Jitter is the delay before retry number attempt (0 for the first): a
// random time between half of base·2^attempt and all of it, that doubling
// stopped at ceiling.
func Jitter(attempt int, base, ceiling time.Duration) time.Duration {
	d := base << min(attempt, 20)
	if d > ceiling || d <= 0 {
		d = ceiling
	}
	return d/2 + rand.N(d/2+1)
}

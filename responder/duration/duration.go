// Package duration reads durations as operators write them, in rules,
// flags, the environment and settings files alike. It links nothing else
// of authguard, so both binaries can use it.
package duration

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parse reads a duration as operators write them, in rules and flags
// alike: Go's syntax (90s, 5m, 1h30m) or whole days (7d).
func Parse(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100000 {
			return 0, fmt.Errorf("bad duration %q: want e.g. 30s, 5m, 24h or 7d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want e.g. 30s, 5m, 24h or 7d", s)
	}
	return d, nil
}

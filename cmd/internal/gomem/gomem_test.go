package gomem

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"
)

// GOMEMLIMIT, when set, is the limit in force, whatever the container says.
func TestGOMEMLIMITWins(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	t.Setenv("GOMEMLIMIT", "700MiB")
	debug.SetMemoryLimit(700 << 20) // what the runtime read from it at start
	if got := Set(slog.New(slog.NewTextHandler(io.Discard, nil))); got != 700<<20 {
		t.Errorf("limit %d, want GOMEMLIMIT's %d", got, 700<<20)
	}
}

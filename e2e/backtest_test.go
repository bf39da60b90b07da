package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A backtest reads Loki's history with the daemon's client (query_range,
// paged, with its tenant) and decides exactly as a replay of the same
// lines exported to a file: an attack of several addresses, with
// successes and a line that is not JSON among them.
func TestABacktestFromLokiDecidesAsTheFileReplay(t *testing.T) {
	l := newLoki(t)
	b := make([]byte, 6)
	rand.Read(b)
	run := hex.EncodeToString(b)
	labels := map[string]string{"service": "audit", "run": run}
	var lines []string
	for i := range 60 {
		action := "auth_failed"
		if i%7 == 6 {
			action = "auth_succeeded"
		}
		lines = append(lines, fmt.Sprintf(`{"action":%q,"client_ip":"203.0.113.%d","username":"user%d","request_id":"r%d"}`, action, i%4, i%13, i))
	}
	lines = append(lines, "not json at all")
	l.push(t, labels, lines...)
	selector := fmt.Sprintf(`{service="audit", run=%q}`, run)

	dump := filepath.Join(t.TempDir(), "run.jsonl")
	f, _ := os.Create(dump)
	var entries []lokiEntry
	eventually(t, 15*time.Second, "Loki to hold every pushed line", func() bool {
		entries = l.entries(t, selector)
		return len(entries) == len(lines)
	})
	for _, e := range entries {
		json.NewEncoder(f).Encode(map[string]any{"labels": e.labels, "line": e.line, "timestamp": time.Unix(0, e.ts).UTC().Format(time.RFC3339Nano)})
	}
	f.Close()
	bin := filepath.Join(binDir, "authguard")
	fromFile, err := exec.Command(bin, "replay", "-o", "jsonl", dump).Output()
	if err != nil || strings.Count(string(fromFile), "\n") < 3 {
		t.Fatalf("file replay: %v\n%s", err, fromFile)
	}
	args := []string{"replay", "-o", "jsonl", "--loki-url", l.url, "--loki-query", selector + ` |= "auth_" | json`, "--since", "1h"}
	if l.tenant != "" {
		args = append(args, "--loki-tenant", l.tenant)
	}
	fromLoki, err := exec.Command(bin, args...).Output()
	if err != nil || string(fromLoki) != string(fromFile) {
		t.Errorf("backtest from Loki: %v\n got %s\nwant %s", err, fromLoki, fromFile)
	}
}

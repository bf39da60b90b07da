package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/auditsig"
)

// A workload that can write {service="audit"} lines into Loki could have
// any address blocked. With signing on, its forged lines (unsigned, or
// signed with a key it made up) block nothing, live and in replay, while
// the gateway's signed lines block as before.
func TestForgedAuditLinesBlockNothingWhenLinesAreSigned(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "audit-key")
	os.WriteFile(keyFile, []byte("the gateways' audit signing key\n"), 0o600)
	s := newStack(t, stackOptions{ttl: "300s", dArgs: []string{"--audit-verify-key-file", keyFile}, gwArgs: []string{"--audit-signing-key-file", keyFile}})
	victim, attacker := "198.51.100.88", "203.0.113.200"
	forger, _ := auditsig.NewKey([]byte("a key the forger made up"))
	for i := range 10 {
		ts := time.Now().UTC().Format(time.RFC3339Nano)
		line := map[string]string{"ts": ts, "service": "audit", "action": "auth_failed", "client_ip": victim, "username": fmt.Sprint("u", i), "request_id": fmt.Sprint("f", i)}
		if i%2 == 1 {
			line["sig"] = forger.Sign(auditsig.Fields{TS: ts, Action: "auth_failed", ClientIP: victim, Username: line["username"], RequestID: line["request_id"]})
		}
		b, _ := json.Marshal(line)
		s.loki.push(t, map[string]string{"service": "audit", "run": s.run}, string(b))
	}
	for range 5 {
		s.login(attacker, "guess")
	}
	s.awaitBlocked(attacker)
	eventually(t, 15*time.Second, "the forged lines to be skipped", func() bool {
		return s.metric(`authguard_loki_lines_skipped_total{reason="sig_unsigned"}`) == 5 &&
			s.metric(`authguard_loki_lines_skipped_total{reason="sig_unknown_key"}`) == 5
	})
	if a := s.request(victim, "GET", "/health", ""); a.status != 200 {
		t.Errorf("the forged lines' victim is refused: %d", a.status)
	}

	// Replay of the same log, with the key: the same decision.
	dump := filepath.Join(dir, "run.jsonl")
	f, _ := os.Create(dump)
	for _, e := range s.loki.entries(t, fmt.Sprintf(`{service="audit", run=%q}`, s.run)) {
		json.NewEncoder(f).Encode(map[string]any{"labels": e.labels, "line": e.line, "timestamp": time.Unix(0, e.ts).UTC().Format(time.RFC3339Nano)})
	}
	f.Close()
	out, err := exec.Command(filepath.Join(binDir, "authguard"), "replay", "--rules", s.rulesFile, "--output", "jsonl", "--audit-verify-key-file", keyFile, dump).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); !strings.Contains(got, attacker) || strings.Contains(got, victim) || strings.Count(got, "\n") != 0 {
		t.Errorf("replay with the key decided:\n%s", got)
	}
	// Without the key, replay believes the forged lines.
	out, _ = exec.Command(filepath.Join(binDir, "authguard"), "replay", "--rules", s.rulesFile, "--output", "jsonl", dump).Output()
	if !strings.Contains(string(out), victim) {
		t.Errorf("replay without the key did not block the victim, so the test shows nothing:\n%s", out)
	}
}

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// make demo's binary runs the whole loop on the built binaries and tells
// what each part did: the block in Redis with the runbook's TTL, the page,
// the 403 AUTH_004, the unblock and the incident report.
func TestTheDemoRunsTheWholeLoop(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "authguard-demo"), "--bin", binDir).CombinedOutput()
	if err != nil {
		t.Fatalf("authguard-demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"redis-cli GET ip_block:203.0.113.7  -> 1   TTL 300 s",
		"IP:                   203.0.113.7",
		`(right password) -> 403 {"error":{"code":"AUTH_004"`,
		"from 198.51.100.23 (right password) -> 200",
		"Status**: Resolved (unblocked by demo-operator)",
		"Done.",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's story lacks %q:\n%s", want, out)
		}
	}
}

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The gateway enforces blocks and emits audit lines; it must not link the
// detector, the responder's fan-out or the rules (DESIGN: the gateway does
// not know the detector), so that neither can grow into it unnoticed.
func TestTheGatewayLinksNoDetectorResponderOrRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/authguard/authguard/"
	linked := 0
	for _, pkg := range strings.Fields(string(out)) {
		rel, ours := strings.CutPrefix(pkg, mod)
		if !ours {
			continue
		}
		linked++
		if rel == "detector" || strings.HasPrefix(rel, "detector/") || rel == "responder" || rel == "rules" || strings.HasPrefix(rel, "rules/") {
			t.Errorf("authguard-gateway links %s", pkg)
		}
	}
	if linked < 3 {
		t.Fatalf("go list found %d authguard packages; the check saw nothing", linked)
	}
}

// The fakes (lokitest, httptest) are for tests and make demo; neither
// production binary carries them.
func TestProductionBinariesCarryNoFakes(t *testing.T) {
	for _, bin := range []string{".", "../authguard"} {
		out, err := exec.Command("go", "list", "-deps", bin).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", bin, err)
		}
		for _, pkg := range strings.Fields(string(out)) {
			if strings.HasSuffix(pkg, "/lokitest") || pkg == "net/http/httptest" || strings.HasSuffix(pkg, "/slacktest") {
				t.Errorf("%s links %s", bin, pkg)
			}
		}
	}
}

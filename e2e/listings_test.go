package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"gopkg.in/yaml.v3"
)

// The latency histograms count an attack's block with sensible values.
// Every listing takes -o table|json|jsonl|yaml with one vocabulary, and
// incidents list finds the incident that incidents show reports; a bad
// incident ID is a usage error (exit 2), not a raw Redis error.
func TestListingsSpeakEveryFormat(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s"})
	ip := "203.0.113.61"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	// The promise in figures: failed login to block, block to enforced.
	eventually(t, 10*time.Second, "the latency histograms to count the block", func() bool {
		return s.metric("authguard_event_to_block_seconds_count") == 1 &&
			metricAt(strings.TrimPrefix(s.gwAdmin, "http://"), "authguard_gateway_block_to_enforce_seconds_count") == 1
	})
	if sum := s.metric("authguard_event_to_block_seconds_sum"); sum <= 0 || sum > 5 {
		t.Errorf("failed login to block took %.3f s", sum)
	}
	if sum := metricAt(strings.TrimPrefix(s.gwAdmin, "http://"), "authguard_gateway_block_to_enforce_seconds_sum"); sum < 0 || sum > 2 {
		t.Errorf("block to enforce took %.3f s", sum)
	}

	// Names as Prometheus's promlint wants them (units, _total on
	// counters, help on each), the gateway's under authguard_gateway_.
	for _, at := range []struct{ url, prefix string }{{"http://" + s.daemonAt + "/metrics", "authguard_"}, {s.gwAdmin + "/metrics", "authguard_gateway_"}} {
		resp, err := http.Get(at.url)
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		problems, err := promlint.New(bytes.NewReader(metrics)).Lint()
		if err != nil || len(problems) > 0 {
			t.Errorf("promlint %s: %v %v", at.url, problems, err)
		}
		for _, line := range strings.Split(string(metrics), "\n") {
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			if strings.HasPrefix(line, "# TYPE ") && !strings.HasPrefix(name, at.prefix) && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
				t.Errorf("%s serves %s, outside %s*", at.url, name, at.prefix)
			}
		}
	}

	out, err := s.cli("blocks", "list", "-o", "yaml")
	var blocks []map[string]any
	if err != nil || yaml.Unmarshal([]byte(out), &blocks) != nil || len(blocks) != 1 || blocks[0]["ip"] != ip {
		t.Fatalf("blocks list -o yaml: %v %v\n%s", blocks, err, out)
	}
	out, err = s.cli("blocks", "list", "-o", "jsonl")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"ip":"`+ip+`"`) {
		t.Fatalf("blocks list -o jsonl: %v\n%s", err, out)
	}
	out, err = s.cli("incidents", "list", "-o", "json", "--rule", "failed-login-burst", "--since", "1h")
	var incidents []struct{ ID, Rule, Key string }
	if err != nil || json.Unmarshal([]byte(out), &incidents) != nil || len(incidents) != 1 || incidents[0].Key != ip {
		t.Fatalf("incidents list: %v %v\n%s", incidents, err, out)
	}
	if report, err := s.cli("incidents", "show", incidents[0].ID); err != nil || !strings.Contains(report, "Source IPs: "+ip) {
		t.Errorf("incidents show %s: %v\n%s", incidents[0].ID, err, report)
	}
	if out, err := s.cli("incidents", "list", "-o", "json", "--rule", "no-such-rule"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("an empty listing: %q %v, want []", out, err)
	}
	out, err = s.cli("incidents", "show", "nope")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "is not an incident ID") {
		t.Errorf("incidents show nope: %v\n%s", err, out)
	}
}

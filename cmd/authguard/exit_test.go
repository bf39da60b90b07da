package main

import (
	"strings"
	"testing"

	"github.com/authguard/authguard/cmd/internal/exitcode"
)

// Scripts tell failures apart by exit status: a finding is 1, a usage
// error 2, a backend that cannot be reached 3; --version and -v print the
// build and succeed.
func TestExitStatusesTellFailuresApart(t *testing.T) {
	bad := write(t, "bad.yaml", "rules:\n  - name: x\n    treshold: 5\n")
	for _, tt := range []struct {
		name string
		args []string
		want int
	}{
		{"a rules file with an error is a finding", []string{"rules", "lint", bad}, exitcode.Findings},
		{"an unknown flag is a usage error", []string{"blocks", "list", "--bogus"}, exitcode.Usage},
		{"an unknown command is a usage error", []string{"blcoks"}, exitcode.Usage},
		{"a bad enum value is a usage error", []string{"blocks", "list", "--output", "xml"}, exitcode.Usage},
		{"Redis refusing connections is unreachable", []string{"blocks", "list", "--redis-url", "redis://127.0.0.1:1/0"}, exitcode.Unreachable},
		{"a Redis name that does not resolve is unreachable", []string{"accounts", "list", "--redis-url", "redis://no-such-host.invalid:6379/0"}, exitcode.Unreachable},
		{"a Loki URL without a scheme is a usage error", []string{"run", "--check-config", "--loki-url", "loki:3100"}, exitcode.Usage},
		{"a Grafana URL without a scheme is a usage error", []string{"run", "--check-config", "--grafana-url", "grafana:3000"}, exitcode.Usage},
		// go-redis would have taken it for 127.0.0.1:6379.
		{"a Redis URL without a scheme is a usage error", []string{"blocks", "list", "--redis-url", "redis:6379"}, exitcode.Usage},
		{"--version", []string{"--version"}, exitcode.OK},
		{"-v", []string{"-v"}, exitcode.OK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCLI(t, nil, tt.args...)
			if got := exitcode.Of(err); got != tt.want {
				t.Errorf("exit status %d (%v), want %d", got, err, tt.want)
			}
			if tt.want == exitcode.OK && !strings.HasPrefix(out, "authguard ") {
				t.Errorf("printed %q, want the version", out)
			}
		})
	}
}

// A deployment's own AUTHGUARD_VERSION variable does not turn every
// command into --version.
func TestAVersionVariableIsNotTheFlag(t *testing.T) {
	good := write(t, "ok.yaml", "rules:\n  - {name: x, match: {action: auth_failed}, group_by: client_ip, window: 1h, threshold: 5, alert: true}\n")
	out, _, err := runCLI(t, map[string]string{"AUTHGUARD_VERSION": "0.1.0"}, "rules", "lint", good)
	if err != nil || !strings.Contains(out, "1 rules OK") {
		t.Errorf("rules lint with AUTHGUARD_VERSION set: %q %v", out, err)
	}
}

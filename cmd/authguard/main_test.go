package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func write(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRulesLint(t *testing.T) {
	good := write(t, "good.yaml", "rules:\n  - name: a\n    match: {action: auth_failed}\n    group_by: client_ip\n    window: 1d\n    threshold: 5\n    block: {ttl: 5m}\n")
	bad := write(t, "bad.yaml", "rules:\n  - name: a\n    window: 1h\n    treshold: 5\n    alert: true\n")
	out, _, err := runCLI(t, nil, "rules", "lint", good)
	if err != nil || !strings.Contains(out, "1 rules OK") {
		t.Fatalf("good file: %q, %v", out, err)
	}
	_, errOut, err := runCLI(t, nil, "rules", "lint", good, bad)
	if err == nil {
		t.Fatal("a bad file passed lint")
	}
	if want := bad + `:4:5: unknown field "treshold"`; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}
}

func TestTheShippedDefaultRulesLint(t *testing.T) {
	if _, _, err := runCLI(t, nil, "rules", "lint", "../../rules/examples/default.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFileErrorsNameTheirPosition(t *testing.T) {
	cfg := write(t, "authguard.yaml", "loki:\n  url: http://loki:3100\nredis-urll: redis://x\n")
	_, _, err := runCLI(t, nil, "--config", cfg, "run")
	if err == nil || !strings.Contains(err.Error(), cfg+`:3:1: unknown setting "redis-urll"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestSettingsPrecedenceFlagsThenEnvThenFile(t *testing.T) {
	cfg := write(t, "authguard.yaml", "loki:\n  url: http://from-file:3100\n  tenant: file-tenant\nredis-url: redis://from-file:6379\nlisten: 127.0.0.1:1\n")
	var got runCmd
	parse := func(args ...string) {
		t.Helper()
		var c cli
		p := mustParser(t, &c)
		if _, err := p.Parse(args); err != nil {
			t.Fatal(err)
		}
		got = c.Run
	}
	t.Setenv("AUTHGUARD_LOKI_TENANT", "env-tenant")
	parse("--config", cfg, "run", "--redis-url", "redis://from-flag:6379")
	if got.LokiURL != "http://from-file:3100" || got.LokiTenant != "env-tenant" || got.RedisURL != "redis://from-flag:6379" {
		t.Errorf("resolved %+v", got)
	}
}

func TestBadRulesFileStopsStartWithItsPosition(t *testing.T) {
	bad := write(t, "rules.yaml", "rules:\n  - name: a\n    window: soon\n    threshold: 5\n    alert: true\n")
	_, _, err := runCLI(t, nil, "run", "--loki-url", "http://127.0.0.1:1", "--rules", bad, "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), bad+`:3:13: bad duration "soon"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestHelpListsCommands(t *testing.T) {
	out, _, err := runCLI(t, nil, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"run", "rules lint", "demo", "version"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("help lacks %q", cmd)
		}
	}
}

func mustParser(t *testing.T, c *cli) interface {
	Parse([]string) (*kong.Context, error)
} {
	t.Helper()
	p, err := newParser(context.Background(), c, &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/authguard/authguard/cmd/internal/exitcode"
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

// A key of another command at the top of the daemon's file stops run with
// the message README shows; under its command's name it is taken.
func TestAMisplacedSettingIsRefusedAsREADMEShows(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, shown, _ := strings.Cut(string(readme), "$ authguard --config authguard.yaml run\n")
	shown, _, _ = strings.Cut(shown, "\n")
	cfg := write(t, "authguard.yaml", strings.Repeat("# a comment\n", 8)+"output: json\n")
	_, _, err = runCLI(t, nil, "--config", cfg, "run")
	if got := "authguard: " + strings.ReplaceAll(fmt.Sprint(err), cfg, "authguard.yaml"); got != shown || exitcode.Of(err) != exitcode.Usage {
		t.Errorf("got (exit %d)\n%s\nREADME shows\n%s", exitcode.Of(err), got, shown)
	}
	cfg = write(t, "authguard.yaml", "replay:\n  output: json\n")
	if _, _, err := runCLI(t, nil, "--config", cfg, "run", "--check-config"); err != nil {
		t.Errorf("replay's section refused by run: %v", err)
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
	for _, cmd := range []string{"run", "replay", "rules lint", "blocks add", "incidents show", "version"} {
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

func TestReplayTheExampleAttack(t *testing.T) {
	out, errOut, err := runCLI(t, nil, "replay", "--output", "jsonl", "../../rules/examples/attack.log")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := `{"time":"2026-11-22T10:01:04Z","rule":"failed-login-burst","key":"203.0.113.7","action":"block","ttl_seconds":300,"severity":"P3","count":5}`
	if lines[0] != want {
		t.Errorf("first decision\n got %s\nwant %s", lines[0], want)
	}
	if len(lines) != 4 || !strings.Contains(lines[3], `"count":8,"renewal":true`) {
		t.Errorf("decisions:\n%s", out)
	}
	if !strings.Contains(errOut, "replayed 17 lines: 15 events, 2 skipped (no_client_ip 1, not_json 1); 4 decisions") {
		t.Errorf("summary %q", errOut)
	}
}

func TestReplayReadsLogcliOutputInAnyOrder(t *testing.T) {
	// logcli writes newest first; replay puts the entries in time order.
	var b strings.Builder
	for i := 5; i >= 1; i-- {
		fmt.Fprintf(&b, `{"labels":{"service":"audit"},"line":"{\"action\":\"auth_failed\",\"client_ip\":\"203.0.113.9\"}","timestamp":"2026-11-22T10:00:0%dZ"}`+"\n", i)
	}
	log := write(t, "logcli.jsonl", b.String())
	out, _, err := runCLI(t, nil, "replay", "--output", "jsonl", log)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"time":"2026-11-22T10:00:05Z","rule":"failed-login-burst","key":"203.0.113.9","action":"block","ttl_seconds":300,"severity":"P3","count":5}`; strings.TrimSpace(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
}

func TestCheckConfig(t *testing.T) {
	good := write(t, "rules.yaml", "rules: [{name: a, match: {action: auth_failed}, group_by: client_ip, window: 1h, threshold: 5, block: {ttl: 5m}}]\n")
	out, _, err := runCLI(t, nil, "run", "--check-config", "--rules", good, "--loki-url", "http://loki:3100")
	if err != nil || !strings.Contains(out, "configuration OK: 1 rules") {
		t.Fatalf("%q %v", out, err)
	}
	_, _, err = runCLI(t, nil, "run", "--check-config", "--slack-token-file", "/nonexistent/token")
	if err == nil || !strings.Contains(err.Error(), "read secret") {
		t.Errorf("missing secret: %v", err)
	}
}

// A query with stages Loki's tail loses entries on is split, and one with
// stages authguard cannot check itself is refused at start, saying why.
func TestLokiQueriesAreSplitOrRefusedAtStart(t *testing.T) {
	out, _, err := runCLI(t, nil, "run", "--check-config", "--loki-url", "http://loki:3100", "--loki-query", `{app="shop"} | json | action="auth_failed"`)
	if err != nil || !strings.Contains(out, "configuration OK") {
		t.Errorf("| json and a label filter: %q %v", out, err)
	}
	_, _, err = runCLI(t, nil, "run", "--check-config", "--loki-url", "http://loki:3100", "--loki-query", `{app="shop"} | logfmt | action="auth_failed"`)
	if err == nil || !strings.Contains(err.Error(), `--loki-query col 16: stage "logfmt"`) || !strings.Contains(err.Error(), "Loki's tail silently loses entries") {
		t.Errorf("| logfmt: %v", err)
	}
}

// A secret may come from the environment instead of a file; it is used
// (a token without a channel is refused) and never printed.
func TestSecretsFromTheEnvironment(t *testing.T) {
	env := map[string]string{"AUTHGUARD_SLACK_TOKEN": "xoxb-from-env-1234", "AUTHGUARD_REDIS_PASSWORD": "redis-from-env-5678"}
	_, _, err := runCLI(t, env, "run", "--check-config")
	if err == nil || !strings.Contains(err.Error(), "a bot token needs a channel") {
		t.Fatalf("the token from AUTHGUARD_SLACK_TOKEN was not used: %v", err)
	}
	out, errOut, err := runCLI(t, env, "run", "--check-config", "--slack-channel", "#security")
	if err != nil || !strings.Contains(out, "configuration OK") {
		t.Fatalf("%q %v", out, err)
	}
	for _, secret := range env {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("a secret was printed: %s%s", out, errOut)
		}
	}
}

// --check-config says how pages go out: the mode the secrets choose and
// whether the buttons are on. A signing secret without a listener for
// Slack's interactions is refused, wherever the secret came from.
func TestCheckConfigSaysHowPagesGoOut(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no secrets", nil, nil, "slack: none (pages on stdout), no buttons"},
		{"a webhook", map[string]string{"AUTHGUARD_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}, nil, "slack: incoming webhook (a post per page), no buttons"},
		{"a bot with buttons", map[string]string{"AUTHGUARD_SLACK_TOKEN": "xoxb-1", "AUTHGUARD_SLACK_SIGNING_SECRET": "s3cret"},
			[]string{"--slack-channel", "#sec", "--slack-listen", ":9092"}, "slack: bot token (a message per incident), buttons on :9092"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, k := range []string{"AUTHGUARD_SLACK_TOKEN", "AUTHGUARD_SLACK_WEBHOOK_URL", "AUTHGUARD_SLACK_SIGNING_SECRET"} {
				t.Setenv(k, "")
			}
			out, _, err := runCLI(t, c.env, append([]string{"run", "--check-config"}, c.args...)...)
			if err != nil || !strings.Contains(out, c.want) {
				t.Errorf("%q %v, want it to say %q", out, err, c.want)
			}
		})
	}
	t.Setenv("AUTHGUARD_SLACK_SIGNING_SECRET", "s3cret")
	if _, _, err := runCLI(t, nil, "run", "--check-config"); err == nil || !strings.Contains(err.Error(), "needs --slack-listen") {
		t.Errorf("a signing secret from the environment without --slack-listen: %v", err)
	}
}

func TestReplayWritesAReviewPage(t *testing.T) {
	page := filepath.Join(t.TempDir(), "report.html")
	if _, _, err := runCLI(t, nil, "replay", "--report", page, "../../rules/examples/attack.log"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, want := range []string{"<svg", `class="bar"`, `<circle class="block"`, "<td>203.0.113.7</td><td class=\"n\">8</td>", "failed-login-burst P3: 4",
		// One row for the block and its three renewals.
		`<td>203.0.113.7</td><td>failed-login-burst</td><td>block</td><td>2026-11-22 10:01:04</td><td>2026-11-22 10:01:07</td><td class="n">8</td><td class="n">3</td><td>P3</td>`} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "http://") || strings.Contains(html, "https://") || strings.Contains(html, " src=") {
		t.Error("the report is not self-contained")
	}
}

// In replay the log is sorted by time: a line stamped a year ahead, first
// in the file, does not hide the attack after it.
func TestReplayALineFromTheFutureHidesNothing(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"ts":"2027-11-22T10:00:00Z","action":"auth_failed","client_ip":"192.0.2.66"}` + "\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, `{"ts":"2026-11-22T10:00:0%dZ","action":"auth_failed","client_ip":"203.0.113.9"}`+"\n", i)
	}
	out, _, err := runCLI(t, nil, "replay", "--output", "jsonl", write(t, "future.log", b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"time":"2026-11-22T10:00:05Z","rule":"failed-login-burst","key":"203.0.113.9","action":"block","ttl_seconds":300,"severity":"P3","count":5}`; strings.TrimSpace(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
}

// A long line is read whole (an 8 KB user agent, doubled by escaping, does
// not hide the attempt) and a line over the hard limit is counted and
// skipped; the run goes on either way.
func TestReplayCountsLongLinesAndNeverAborts(t *testing.T) {
	var b strings.Builder
	ua := strings.Repeat(`\"`, 8<<10)
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, `{"ts":"2026-11-22T10:00:0%dZ","user_agent":"%s","action":"auth_failed","client_ip":"203.0.113.9"}`+"\n", i, ua)
	}
	fmt.Fprintf(&b, `{"ts":"2026-11-22T10:00:09Z","action":"auth_failed","client_ip":"203.0.113.10","pad":"%s"}`+"\n", strings.Repeat("p", 200<<10))
	out, errOut, err := runCLI(t, nil, "replay", "--output", "jsonl", "--max-line-hard-bytes", "102400", write(t, "long.log", b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"time":"2026-11-22T10:00:05Z","rule":"failed-login-burst","key":"203.0.113.9","action":"block","ttl_seconds":300,"severity":"P3","count":5}`; strings.TrimSpace(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
	if !strings.Contains(errOut, "replayed 6 lines: 5 events, 1 skipped (too_long 1)") {
		t.Errorf("summary %q", errOut)
	}
}

// An operator cannot block an address that must never be blocked, nor a
// network that holds one, nor one inside a never-blocked network.
func TestBlocksAddRefusesAddressesThatAreNeverBlocked(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "::1", "0.0.0.0", "169.254.169.254", "10.1.2.3",
		"0.0.0.0/0", "::/0", "126.0.0.0/7", "169.254.0.0/16", "fe80::/64", "10.20.0.0/16", "8.0.0.0/6"} {
		_, _, err := runCLI(t, nil, "blocks", "add", ip, "--redis-url", "redis://127.0.0.1:1/0", "--never-block", "10.0.0.0/8")
		if err == nil || !strings.Contains(err.Error(), "never blocks such an address") {
			t.Errorf("blocks add %s: %v", ip, err)
		}
	}
}

// A push receiver that would take anyone's pushes is refused at start
// unless that is asked for; a credentials file with a malformed line names
// the line, never its secret.
func TestThePushReceiverNeedsAWayToAuthenticate(t *testing.T) {
	_, _, err := runCLI(t, nil, "run", "--check-config", "--push-listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "--push-bearer-token-file, --push-basic-auth-file or --push-tls-client-ca-file") {
		t.Errorf("no credentials: %v", err)
	}
	if out, _, err := runCLI(t, nil, "run", "--check-config", "--push-listen", "127.0.0.1:0", "--push-allow-unauthenticated"); err != nil {
		t.Errorf("--push-allow-unauthenticated: %q %v", out, err)
	}
	users := write(t, "users", "gateway:s3cret\nshipper-without-password\n")
	_, _, err = runCLI(t, nil, "run", "--check-config", "--push-listen", "127.0.0.1:0", "--push-basic-auth-file", users)
	if err == nil || !strings.Contains(err.Error(), users+":2: want \"USER:PASSWORD\"") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("malformed users file: %v", err)
	}
	_, _, err = runCLI(t, nil, "run", "--check-config", "--push-listen", "127.0.0.1:0", "--push-tls-client-ca-file", users)
	if err == nil || !strings.Contains(err.Error(), "--push-tls-client-ca-file needs --push-tls-cert-file") {
		t.Errorf("a client CA without a certificate: %v", err)
	}
}

// Under a memory limit --check-config prints each rule's share of the
// detector's budget, derived from the limit, and refuses caps that cannot
// fit it.
func TestCheckConfigPrintsAndHoldsTheMemoryBudget(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	t.Setenv("GOMEMLIMIT", "921MiB") // a 1 GiB container
	debug.SetMemoryLimit(921 << 20)
	out, _, err := runCLI(t, nil, "run", "--check-config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"of the detector's 368 MiB (40 % of the Go memory limit, 921 MiB)", "rule failed-login-burst: up to 913225 keys, 123 MiB", "rule account-enumeration: up to 414034 keys, 123 MiB", "rule targeted-account: up to 144517 keys, 123 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config lacks %q:\n%s", want, out)
		}
	}
	big := write(t, "rules.yaml", "max_tracked_keys: 8000000\nrules: [{name: a, match: {action: auth_failed}, group_by: client_ip, window: 1h, threshold: 5, block: {ttl: 5m}}]\n")
	if _, _, err := runCLI(t, nil, "run", "--check-config", "--rules", big); err == nil || !strings.Contains(err.Error(), big+": the rules' windows need up to 1076 MiB") {
		t.Errorf("8,000,000 keys under a 1 GiB limit: %v", err)
	}
}

// Durations are written the same way in flags, the environment and the
// settings file as in rules: whole days too.
func TestDurationSettingsTakeDays(t *testing.T) {
	_, _, err := runCLI(t, nil, "blocks", "add", "203.0.113.7", "--ttl", "1d", "--redis-url", "redis://127.0.0.1:1/0")
	if err == nil || strings.Contains(err.Error(), "duration") {
		t.Errorf("blocks add --ttl 1d: %v, want it to get as far as Redis", err)
	}
	if out, _, err := runCLI(t, map[string]string{"AUTHGUARD_LOKI_BACKFILL_MAX": "2d"}, "run", "--check-config", "--checkpoint-interval", "1d"); err != nil {
		t.Errorf("run --check-config with day durations: %q %v", out, err)
	}
	if _, _, err := runCLI(t, nil, "blocks", "add", "203.0.113.7", "--ttl", "1.5d"); err == nil || !strings.Contains(err.Error(), "want e.g. 30s, 5m, 24h or 7d") {
		t.Errorf("blocks add --ttl 1.5d: %v", err)
	}
}

// Evidence names a person or at least an account, never "unknown": sudo's
// caller first, and in a pod (no $USER) the account and host.
func TestTheOperatorIsNamedWithoutUSER(t *testing.T) {
	t.Setenv("SUDO_USER", "alice")
	t.Setenv("USER", "root")
	if got := (operatorFlags{}).who(); got != "alice" {
		t.Errorf("under sudo: %q, want alice", got)
	}
	for _, k := range []string{"SUDO_USER", "USER", "LOGNAME"} {
		t.Setenv(k, "")
	}
	host, _ := os.Hostname()
	if got := (operatorFlags{}).who(); got == "" || got == "unknown" || !strings.HasSuffix(got, "@"+host) {
		t.Errorf("without $USER: %q, want account@%s", got, host)
	}
	if got := (operatorFlags{Operator: "bob"}).who(); got != "bob" {
		t.Errorf("--operator bob: %q", got)
	}
	// In a pod (kubectl exec), the service account the kubelet mounted.
	claims := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:authguard:authguard"}`))
	saved := serviceAccountToken
	serviceAccountToken = write(t, "token", "eyJhbGciOiJSUzI1NiJ9."+claims+".c2lnbmF0dXJl\n")
	defer func() { serviceAccountToken = saved }()
	if got := (operatorFlags{}).who(); got != "system:serviceaccount:authguard:authguard on "+host {
		t.Errorf("in a pod: %q", got)
	}
	serviceAccountToken = write(t, "garbage", "not a token")
	if got := (operatorFlags{}).who(); !strings.HasSuffix(got, "@"+host) {
		t.Errorf("with a token that is not one: %q", got)
	}
}

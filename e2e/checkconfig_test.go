package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkConfig runs a binary's --check-config and returns its output and
// exit status.
func checkConfig(t *testing.T, env []string, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("%s: %v", bin, err)
	return "", 0
}

// --check-config=online reaches Redis, Loki and Slack with the settings as
// given, says what each answered and where each setting came from, and
// exits 3 when one does not answer; plain --check-config contacts nothing.
func TestCheckConfigOnlineReachesEachBackend(t *testing.T) {
	r := startRedisServer(t)
	l := newLoki(t)
	slack := newSlack(t)
	run := "check-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	l.push(t, map[string]string{"service": "audit", "run": run},
		`{"action":"auth_failed","client_ip":"203.0.113.9","username":"alice","status":401}`)
	cfg := filepath.Join(t.TempDir(), "authguard.yaml")
	os.WriteFile(cfg, []byte("redis-url: "+r.url()+"\nreplay:\n  output: json\n"), 0o600)
	args := []string{"--config", cfg, "run", "--check-config=online", "--listen", "127.0.0.1:0",
		"--loki-url", l.url, "--loki-query", fmt.Sprintf(`{service="audit", run=%q} |= "auth_" | json`, run),
		"--slack-channel", "#security", "--slack-api-url", slack.srv.GetAPIURL()}
	if l.tenant != "" {
		args = append(args, "--loki-tenant", l.tenant)
	}
	env := []string{"AUTHGUARD_SLACK_TOKEN=xoxb-check", "AUTHGUARD_LOG_LEVEL=warn"}
	out, status := checkConfig(t, env, "authguard", args...)
	for _, want := range []string{
		"redis      ok: answers PING",
		"loki       ok: the query runs; its newest line is",
		"slack      ok: the token is",
		"--redis-url=" + r.url(), "from " + cfg + ":1:1",
		"--slack-channel=#security", "from flag",
		"--log-level=warn", "from env AUTHGUARD_LOG_LEVEL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// replay's section in the file is not run's, and does not trouble it.
	if status != 0 {
		t.Fatalf("exit %d (want 0)\n%s", status, out)
	}

	// Redis gone: the other backends are still reached, and the exit
	// status says a backend is unreachable.
	r.stop()
	out, status = checkConfig(t, env, "authguard", args...)
	if status != 3 || !strings.Contains(out, "redis      FAILED") || !strings.Contains(out, "loki       ok") {
		t.Errorf("with Redis down: exit %d (want 3)\n%s", status, out)
	}
	// Offline, nothing is contacted: the same settings pass.
	offline := append([]string{}, args...)
	offline[3] = "--check-config"
	if out, status = checkConfig(t, env, "authguard", offline...); status != 0 || strings.Contains(out, "reaching") {
		t.Errorf("offline with Redis down: exit %d (want 0)\n%s", status, out)
	}
}

// The gateway's --check-config=online reaches Redis and opens a connection
// to its upstream; an upstream that is not there exits 3.
func TestGatewayCheckConfigOnlineReachesItsUpstream(t *testing.T) {
	r := startRedisServer(t)
	app := httptest.NewServer(http.NotFoundHandler())
	defer app.Close()
	args := []string{"--check-config=online", "--redis-url", r.url(), "--upstream", app.URL}
	out, status := checkConfig(t, nil, "authguard-gateway", args...)
	if status != 0 || !strings.Contains(out, "upstream   ok: accepts connections on "+strings.TrimPrefix(app.URL, "http://")) ||
		!strings.Contains(out, "--upstream="+app.URL) {
		t.Fatalf("exit %d (want 0)\n%s", status, out)
	}
	args[4] = "http://" + freeAddr(t)
	if out, status = checkConfig(t, nil, "authguard-gateway", args...); status != 3 || !strings.Contains(out, "upstream   FAILED") {
		t.Errorf("upstream gone: exit %d (want 3)\n%s", status, out)
	}
}

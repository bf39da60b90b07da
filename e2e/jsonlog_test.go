package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// With --log-format json every line of the daemon's log is one JSON
// object, also while Redis is away (go-redis's own complaints go through
// the daemon's logger) and across start and stop, and durations read as
// text. The start line names the version; the stop line the reason.
func TestTheDaemonLogIsJSONThroughARedisOutage(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "120s", dArgs: []string{"--log-format", "json"}})
	s.redis.stop()
	for range 5 {
		s.login("203.0.113.80", "guess")
	}
	eventually(t, 20*time.Second, "the daemon to retry a write", func() bool {
		return strings.Contains(s.daemon.output(), "retrying")
	})
	s.redis.start()
	eventually(t, 30*time.Second, "the block to be written", func() bool { return s.exists("ip_block:203.0.113.80") })
	s.daemon.stop()
	var started, stopped, retried bool
	for _, line := range strings.Split(strings.TrimSpace(s.daemon.output()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a log line that is not JSON: %q", line)
			continue
		}
		switch rec["msg"] {
		case "authguard running":
			started = strings.HasPrefix(rec["version"].(string), "authguard ")
		case "authguard stopped":
			stopped = rec["reason"] != nil
		}
		if in, ok := rec["retry_in"]; ok {
			_, isText := in.(string)
			retried = isText
		}
	}
	if !started || !stopped || !retried {
		t.Errorf("start line with version %v, stop line with reason %v, retry_in as text %v", started, stopped, retried)
	}
}

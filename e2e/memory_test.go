package e2e

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// plainBuilds are the binaries built without -race, by name.
var plainBuilds sync.Map // name -> func() (string, error)

// plainBinary is cmd/<name> built without -race, for what measures memory
// or CPU: the race detector's shadow memory is several times the
// program's own.
func plainBinary(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(binDir, name+"-plain")
	build, _ := plainBuilds.LoadOrStore(name, sync.OnceValues(func() (string, error) {
		out, err := exec.Command("go", "build", "-o", path, "../cmd/"+name).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("build: %v\n%s", err, out)
		}
		return path, nil
	}))
	path, err := build.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// inMemoryCgroup returns cmd run in a new memory cgroup limited to limit
// bytes, below the test's own (v1 or v2), removed when the test ends; ok
// is false where this process may not make one (not root, no memory
// controller).
func inMemoryCgroup(t *testing.T, limit int64, cmd *exec.Cmd) (_ *exec.Cmd, ok bool) {
	t.Helper()
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return cmd, false
	}
	var dir, limitFile string
	for _, line := range strings.Split(string(own), "\n") {
		parts := strings.SplitN(line, ":", 3)
		switch {
		case len(parts) == 3 && parts[1] == "memory":
			dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", parts[2]), "memory.limit_in_bytes"
		case len(parts) == 3 && parts[0] == "0" && parts[1] == "" && dir == "":
			dir, limitFile = filepath.Join("/sys/fs/cgroup", parts[2]), "memory.max"
		}
	}
	if dir == "" {
		return cmd, false
	}
	dir = filepath.Join(dir, fmt.Sprintf("authguard-e2e-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return cmd, false
	}
	t.Cleanup(func() { os.Remove(dir) }) // after the process's own cleanup has ended it
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		return cmd, false
	}
	wrapped := exec.Command("sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir, cmd.Path}, cmd.Args[1:]...)...)
	wrapped.Env = cmd.Env
	return wrapped, true
}

// sprayBody is a push of one failed login from each of n IPv6 addresses
// from the first'th on.
func sprayBody(first, n int, at time.Time) []byte {
	var b strings.Builder
	b.WriteString(`{"streams":[{"stream":{"service":"audit"},"values":[`)
	for i := range n {
		k := first + i
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 8: byte(k >> 24), 9: byte(k >> 16), 10: byte(k >> 8), 11: byte(k)}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `["%d","{\"action\":\"auth_failed\",\"client_ip\":\"%s\",\"username\":\"u%d\"}"]`, at.UnixNano()+int64(k), netip.AddrFrom16(a), k%7)
	}
	b.WriteString(`]}]}`)
	return []byte(b.String())
}

// A spray of 4,000,000 distinct IPv6 addresses, one failed login each,
// took the daemon to 1,057,700 kB, past its 1 GiB container limit: the pod
// would be killed mid-attack and forget everything. Run in a memory cgroup
// of 1 GiB (the kernel kills it past that; where no cgroup can be made,
// GOMEMLIMIT at 90 % of it stands in), its peak RSS stays under the limit,
// the detector evicts and says so, and a burst sent in the middle of the
// spray is blocked.
func TestAnIPv6SprayStaysInsideTheMemoryLimit(t *testing.T) {
	const limitKB, total, perPush = 1 << 20, 4_000_000, 20_000
	bin := plainBinary(t, "authguard")
	rs := startRedisServer(t)
	rdb := rs.client()
	pushAt, adminAt := freeAddr(t), freeAddr(t)
	token := filepath.Join(t.TempDir(), "push-token")
	os.WriteFile(token, []byte("spray-token\n"), 0o600)
	cmd := exec.Command(bin, "run", "--redis-url", rs.url(), "--listen", adminAt, "--push-listen", pushAt,
		"--push-bearer-token-file", token, "--log-format", "text")
	cmd, inCgroup := inMemoryCgroup(t, limitKB<<10, cmd)
	if !inCgroup {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT=921MiB")
	}
	d := startCmd(t, "authguard", cmd)
	s := &stack{t: t, pushAt: pushAt, pushToken: token}
	eventually(t, 20*time.Second, "the daemon to be ready", func() bool { return d.alive(t) && httpStatus("http://"+adminAt+"/readyz") == 200 })

	burst := "2001:db8:ffff::1"
	start := time.Now()
	for first := 0; first < total; first += perPush {
		if code := s.pushAnswer(t, "spray-token", "", "application/json", sprayBody(first, perPush, start)); code != http.StatusNoContent {
			t.Fatalf("push at %d: %d", first, code)
		}
		if first == total/2 {
			if code := s.pushAnswer(t, "spray-token", "", "application/json", fiveFailures(burst)); code != http.StatusNoContent {
				t.Fatalf("burst push: %d", code)
			}
		}
	}
	eventually(t, time.Minute, "the spray to be counted", func() bool {
		return metricAt(adminAt, "authguard_events_processed_total") >= total+5
	})
	took := time.Since(start)
	eventually(t, 10*time.Second, "the burst's block", func() bool { return rdb.Exists(t.Context(), "ip_block:"+burst).Val() == 1 })
	peak := statusKB(t, d.cmd.Process.Pid, "VmHWM")
	evicted := metricAt(adminAt, "authguard_detector_evictions_total")
	t.Logf("%d addresses in %v: peak RSS %d MiB of a %d MiB limit (in a memory cgroup: %v; Go limit %.0f MiB), %.0f evictions, %.0f keys tracked",
		total, took.Round(time.Millisecond), peak>>10, limitKB>>10, inCgroup, metricAt(adminAt, "authguard_memory_limit_bytes")/(1<<20),
		evicted, metricAt(adminAt, "authguard_detector_tracked_keys"))
	if peak >= limitKB {
		t.Errorf("peak RSS %d MiB: over the 1 GiB limit, the pod would be killed", peak>>10)
	}
	if evicted == 0 {
		t.Error("4,000,000 addresses tracked without an eviction: the caps do not hold")
	}
}

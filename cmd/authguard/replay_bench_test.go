package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// attackLine is line i of a held-out style attack, a raw audit line: a
// credential-stuffing spray over 12,750 addresses of 51 networks and 500
// accounts, a line every millisecond or so, each its own request.
func attackLine(i int) (time.Time, string) {
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * 1100 * time.Microsecond)
	return at, fmt.Sprintf(`{"ts":%q,"service":"audit","action":"auth_failed","client_ip":"203.0.%d.%d","username":"user%d","path":"/auth/login","status":401,"user_agent":"Mozilla/5.0","request_id":"%016x"}`,
		at.Format(time.RFC3339Nano), (i*7)%51, (i*13)%250+1, (i*31)%500, i)
}

// writeAttack writes the attack's n lines as logcli query --output=jsonl
// writes them by default: newest first, each line wrapped with its
// stream's labels and its timestamp.
func writeAttack(b testing.TB, path string, n int) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	for i := n - 1; i >= 0; i-- {
		at, line := attackLine(i)
		enc.Encode(struct {
			Labels    map[string]string `json:"labels"`
			Line      string            `json:"line"`
			Timestamp string            `json:"timestamp"`
		}{map[string]string{"detected_level": "unknown", "service": "audit", "service_name": "audit"}, line, at.Format(time.RFC3339Nano)})
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// timeRun runs a command with its output to /dev/null and returns how long
// it took and its peak RSS in MiB. The output is not read: held by this
// process, it would raise this process's peak, which a child started
// later reports as its own (Linux carries the high-water mark across
// exec).
func timeRun(b *testing.B, name string, args ...string) (time.Duration, float64) {
	b.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	var errOut strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = null, &errOut
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v\n%.2000s", name, err, errOut.String())
	}
	took := time.Since(start)
	return took, float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
}

// BenchmarkReplayAgainstFail2ban times the whole replay process on a
// 210,000-line attack exported with logcli (jsonl, newest first) and, when
// fail2ban-regex is installed, fail2ban-regex matching the same lines (it
// only matches; replay decides), and reports lines/s, peak RSS and the
// ratio of their times (make bench-replay).
func BenchmarkReplayAgainstFail2ban(b *testing.B) {
	const lines = 210_000
	dir := b.TempDir()
	log := filepath.Join(dir, "attack.log")
	writeAttack(b, log, lines)
	bin := filepath.Join(dir, "authguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	f2b, f2bErr := exec.LookPath("fail2ban-regex")
	b.ResetTimer()
	var ours, theirs time.Duration
	var rss float64
	for range b.N {
		took, r := timeRun(b, bin, "replay", "-o", "jsonl", log)
		ours, rss = ours+took, max(rss, r)
		if f2bErr == nil {
			took, _ := timeRun(b, f2b, log, `\\"action\\":\\"auth_failed\\",\\"client_ip\\":\\"<HOST>\\"`)
			theirs += took
		}
	}
	b.ReportMetric(float64(lines*b.N)/ours.Seconds(), "lines/s")
	b.ReportMetric(rss, "peak-rss-MiB")
	if f2bErr == nil {
		b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-fail2ban-regex")
	} else {
		b.Log("fail2ban-regex is not installed (apt-get install fail2ban): no ratio")
	}
}

// writeDays writes the held-out style attack again and again, a day apart,
// until the file holds size bytes.
func writeDays(b testing.TB, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var written int64
	for day := 0; written < size; day++ {
		for i := 0; i < 210_000 && written < size; i++ {
			at, line := attackLine(i)
			stamp := at.Format(time.RFC3339Nano)
			n, _ := fmt.Fprintf(w, "%s%s%s\n", line[:7], at.Add(time.Duration(day)*24*time.Hour).Format(time.RFC3339Nano), line[7+len(stamp):])
			written += int64(n)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// BenchmarkReplayMemoryFollowsKeys replays 1 GiB made of the held-out
// style attack repeated over later days, and its first 100 MiB, and
// reports both peak RSS figures and their ratio: the memory follows the
// keys the rules track, not the input (make bench-replay).
func BenchmarkReplayMemoryFollowsKeys(b *testing.B) {
	dir := b.TempDir()
	small, large := filepath.Join(dir, "100MiB.log"), filepath.Join(dir, "1GiB.log")
	writeDays(b, small, 100<<20)
	writeDays(b, large, 1<<30)
	bin := filepath.Join(dir, "authguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	b.ResetTimer()
	var rssSmall, rssLarge float64
	var took time.Duration
	for range b.N {
		_, r := timeRun(b, bin, "replay", "-o", "jsonl", small)
		rssSmall = max(rssSmall, r)
		d, r := timeRun(b, bin, "replay", "-o", "jsonl", large)
		rssLarge, took = max(rssLarge, r), took+d
	}
	b.ReportMetric(rssSmall, "rss-100MiB-MiB")
	b.ReportMetric(rssLarge, "rss-1GiB-MiB")
	b.ReportMetric(rssLarge/rssSmall, "rss-ratio")
	b.ReportMetric(float64(1<<30)*float64(b.N)/took.Seconds()/(1<<20), "MiB/s")
}

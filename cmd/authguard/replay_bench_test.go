package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// writeAttack writes n raw audit lines of a held-out style attack: a
// credential-stuffing spray over 12,750 addresses of 51 networks and 500
// accounts, a line every millisecond or so, each its own request.
func writeAttack(b *testing.B, path string, n int) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for i := range n {
		fmt.Fprintf(w, `{"ts":%q,"service":"audit","action":"auth_failed","client_ip":"203.0.%d.%d","username":"user%d","path":"/auth/login","status":401,"user_agent":"Mozilla/5.0","request_id":"%016x"}`+"\n",
			t0.Add(time.Duration(i)*1100*time.Microsecond).Format(time.RFC3339Nano), (i*7)%51, (i*13)%250+1, (i*31)%500, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// timeRun runs a command with its output discarded and returns how long it
// took and its peak RSS in MiB.
func timeRun(b *testing.B, name string, args ...string) (time.Duration, float64) {
	b.Helper()
	cmd := exec.Command(name, args...)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%.2000s", name, err, out)
	}
	took := time.Since(start)
	return took, float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
}

// BenchmarkReplayAgainstFail2ban times the whole replay process on a
// 210,000-line attack and, when fail2ban-regex is installed, fail2ban-regex
// matching the same lines (it only matches; replay decides), and reports
// lines/s, peak RSS and the ratio of their times (make bench-replay).
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
			took, _ := timeRun(b, f2b, log, `"action":"auth_failed","client_ip":"<HOST>"`)
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

package e2e

import (
	"bytes"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/golang/snappy"
)

// rssKB reads a process's resident set size from /proc.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// A 9-byte push whose snappy header claims 4 GiB took 23 s and 4.3 GB of
// memory (the shipped limit is 1 GiB); a 2.9 MB body expands to 60 MiB.
// Both are refused with 413, and the daemon's memory hardly moves.
func TestDecompressionBombsDoNotMoveTheDaemonsMemory(t *testing.T) {
	s := newStack(t, stackOptions{ttl: "300s", direct: true})
	pid := s.daemon.cmd.Process.Pid
	before := rssKB(t, pid)
	for _, body := range [][]byte{{0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0}, snappy.Encode(nil, make([]byte, 60<<20))} {
		resp, err := http.Post("http://"+s.daemonAt+"/loki/api/v1/push", "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("a %d-byte bomb: %d, want 413", len(body), resp.StatusCode)
		}
	}
	if grew := rssKB(t, pid) - before; grew > 20<<10 {
		t.Errorf("the daemon's RSS grew by %d MiB", grew>>10)
	}
}

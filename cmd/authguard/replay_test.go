package main

import (
	"compress/gzip"
	"os"
	"strings"
	"testing"
)

// Replay reads what operators have: the same lines split into two
// overlapping exports, or one file given twice, decide exactly as the one
// file; a .gz file and standard input ("-") are read through; a log with
// no audit line at all is an error that names its first line.
func TestReplayReadsRealInputs(t *testing.T) {
	src, err := os.ReadFile("../../rules/examples/attack.log")
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := runCLI(t, nil, "replay", "-o", "jsonl", "../../rules/examples/attack.log")
	if err != nil || want == "" {
		t.Fatalf("the single file: %v", err)
	}
	lines := strings.SplitAfter(string(src), "\n")
	first := write(t, "first.log", strings.Join(lines[:len(lines)*2/3], ""))
	second := write(t, "second.log", strings.Join(lines[len(lines)/3:], ""))
	gz := write(t, "attack.log.gz", "")
	f, _ := os.Create(gz)
	zw := gzip.NewWriter(f)
	zw.Write(src)
	zw.Close()
	f.Close()
	for name, args := range map[string][]string{
		"two overlapping files":  {first, second},
		"the same file twice":    {"../../rules/examples/attack.log", "../../rules/examples/attack.log"},
		"a gzip file":            {gz},
		"overlapping, reordered": {second, first},
	} {
		got, _, err := runCLI(t, nil, append([]string{"replay", "-o", "jsonl"}, args...)...)
		if err != nil || got != want {
			t.Errorf("%s: %v\n got %s\nwant %s", name, err, got, want)
		}
	}

	stdin, _ := os.Open("../../rules/examples/attack.log")
	defer stdin.Close()
	saved := os.Stdin
	os.Stdin = stdin
	got, _, err := runCLI(t, nil, "replay", "-o", "jsonl", "-")
	os.Stdin = saved
	if err != nil || got != want {
		t.Errorf("standard input: %v\n got %s\nwant %s", err, got, want)
	}

	plain := write(t, "auth.log", "Nov 22 10:00:01 host sshd[1]: Failed password for alice from 203.0.113.7\nNov 22 10:00:02 host sshd[1]: Failed password for alice from 203.0.113.7\n")
	if _, _, err := runCLI(t, nil, "replay", plain); err == nil || !strings.Contains(err.Error(), plain+":1: not_json") {
		t.Errorf("a plain-text log: %v, want an error naming %s:1", err, plain)
	}
	if _, _, err := runCLI(t, nil, "replay", write(t, "empty.log", "")); err == nil {
		t.Error("an empty log replayed without an error")
	}
}

package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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

// --baseline lists exactly the keys whose outcome a rule change changes:
// SEC-010 at 3 failures instead of 5 blocks the addresses with 3 or 4
// failures that the baseline never blocked, and the ones with 5 or more
// earlier; an independent count of each address's failures says which.
func TestABaselineListsWhatARuleChangeChanges(t *testing.T) {
	def, err := os.ReadFile("../../rules/examples/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	baseline := write(t, "baseline.yaml", string(def))
	changed := strings.Replace(string(def), "threshold: 5                    #", "threshold: 3                    #", 1)
	if changed == string(def) {
		t.Fatal("the default rules no longer spell SEC-010's threshold as this test expects")
	}
	rules := write(t, "new.yaml", changed)
	var log strings.Builder
	failures := map[string]int{}
	for n := 1; n <= 7; n++ {
		ip := fmt.Sprintf("203.0.113.%d", n)
		failures[ip] = n
		for i := range n {
			fmt.Fprintf(&log, `{"ts":"2026-11-22T10:%02d:%02dZ","action":"auth_failed","client_ip":%q,"username":"u%d"}`+"\n", i, n, ip, n)
		}
	}
	want := map[string]string{}
	for ip, n := range failures {
		switch {
		case n >= 5:
			want[ip] = "blocked earlier"
		case n >= 3:
			want[ip] = "blocked only by the new rules"
		}
	}
	// Each address's lines a minute apart, one address after the other:
	// a log in no time order, which --sort takes (without it, it is
	// refused, naming the first line out of order).
	attack := write(t, "attack.log", log.String())
	if _, _, err := runCLI(t, nil, "replay", attack); err == nil || !strings.Contains(err.Error(), attack+": line 7: an entry of 2026-11-22 10:00:04 UTC is 59s older") {
		t.Errorf("a log out of order: %v", err)
	}
	out, summary, err := runCLI(t, nil, "replay", "--sort", "--rules", rules, "--baseline", baseline, "-o", "json", attack)
	var changes []struct{ Change, Rule, Key string }
	if err != nil || json.Unmarshal([]byte(out), &changes) != nil {
		t.Fatalf("replay --baseline: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, c := range changes {
		if c.Rule != "failed-login-burst" {
			t.Errorf("a rule that did not change changed: %+v", c)
		}
		got[c.Key] = c.Change
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes %v, want %v", got, want)
	}
	if !strings.Contains(summary, "failed-login-burst: 3 blocked earlier") || !strings.Contains(summary, "failed-login-burst: 2 blocked only by the new rules") {
		t.Errorf("summary %q", summary)
	}
}

// The table folds a block's renewals into its row by default, counting
// them; --renewals lists each, and jsonl always has every decision.
func TestTheTableFoldsRenewals(t *testing.T) {
	folded, _, err := runCLI(t, nil, "replay", "../../rules/examples/attack.log")
	if err != nil || strings.Count(folded, "\n") != 2 || !strings.Contains(folded, "  8  ") || !strings.HasSuffix(strings.TrimSpace(folded), "3") {
		t.Errorf("folded table: %v\n%s", err, folded)
	}
	all, _, err := runCLI(t, nil, "replay", "--renewals", "../../rules/examples/attack.log")
	if err != nil || strings.Count(all, "\n") != 5 || strings.Count(all, "renewal\n") != 3 {
		t.Errorf("--renewals: %v\n%s", err, all)
	}
	jsonl, _, _ := runCLI(t, nil, "replay", "-o", "jsonl", "../../rules/examples/attack.log")
	if strings.Count(jsonl, "\n") != 4 {
		t.Errorf("jsonl:\n%s", jsonl)
	}
}

// A plain-text sshd log replays with --format and decides SEC-010 as the
// JSON audit lines would.
func TestReplayReadsPlainTextWithAFormat(t *testing.T) {
	var log strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&log, "Nov 22 10:00:0%d host sshd[7]: Failed password for alice from 203.0.113.7 port 22 ssh2\n", i)
	}
	out, _, err := runCLI(t, nil, "replay", "-o", "jsonl", "--format", `^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) \S+ sshd\[\d+\]: Failed password for (?P<username>\S+) from <HOST>`,
		"--time-format", "Jan _2 15:04:05", "--year", "2026", write(t, "auth.log", log.String()))
	want := `{"time":"2026-11-22T10:00:05Z","rule":"failed-login-burst","key":"203.0.113.7","action":"block","ttl_seconds":300,"severity":"P3","count":5}`
	if err != nil || strings.TrimSpace(out) != want {
		t.Errorf("replay --format: %v\n got %s\nwant %s", err, out, want)
	}
}

// A baseline whose rules group by a field the new rules never name still
// counts it: the lines are read for both sides' fields.
func TestABaselineReadsTheFieldsItsRulesName(t *testing.T) {
	baseline := write(t, "baseline.yaml", "rules:\n  - {name: tenant-spray, group_by: tenant_id, distinct: client_ip, window: 1h, threshold: 3, alert: true}\n")
	var log strings.Builder
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&log, `{"ts":"2026-11-22T10:00:0%dZ","action":"auth_failed","client_ip":"198.51.100.%d","username":"u%d","tenant_id":"acme"}`+"\n", i, i, i)
	}
	out, _, err := runCLI(t, nil, "replay", "--baseline", baseline, "-o", "jsonl", write(t, "tenants.log", log.String()))
	if err != nil || !strings.Contains(out, `"change":"alert lost","rule":"tenant-spray","key":"acme"`) {
		t.Errorf("replay --baseline with a field only the baseline names: %v\n%s", err, out)
	}
}

// The held-out style attack, 210,000 lines over 12,750 addresses exported
// with logcli (jsonl, newest first, so read backward), replayed as a whole
// process does it (read, ordered, decided, written), against a recount
// from scratch of the default rules that block: SEC-010 (5 failures in
// 24h, 5m blocks) and the enumeration rule (11 usernames in 10m, 1h
// blocks). Every decision matches: time, rule, address, count and whether
// it renews a standing block.
func TestReplayOfAHeldOutStyleAttackMatchesARecount(t *testing.T) {
	const lines = 210_000
	down := filepath.Join(t.TempDir(), "attack.jsonl")
	writeAttack(t, down, lines)
	all := make([]string, lines)
	for i := range all {
		_, all[i] = attackLine(i)
	}
	def, err := os.ReadFile("../../rules/examples/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	blocking, _, _ := strings.Cut(string(def), "  - name: targeted-account")
	rules := write(t, "rules.yaml", blocking)
	out, _, err := runCLI(t, nil, "replay", "--rules", rules, "-o", "jsonl", down)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var d replayDecision
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s %d %v", d.Time, d.Rule, d.Key, d.Count, d.Renewal))
	}
	want := recountAttack(t, all)
	if len(got) != len(want) {
		t.Errorf("%d decisions, the recount %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("decision %d: %s\n            the recount: %s", i, got[i], want[i])
		}
	}
	t.Logf("%d lines, %d decisions, all as the recount", lines, len(got))
}

// recountAttack decides the attack's lines (oldest first) from scratch:
// per address, the failures (or distinct usernames) since its slate was
// last cleaned (a block expired, or a gap as long as the window), counted
// within the window; at the threshold a block, renewing one that stands.
func recountAttack(t *testing.T, lines []string) []string {
	type try struct {
		at   time.Time
		user string
	}
	type rule struct {
		name      string
		window    time.Duration
		threshold int
		ttl       time.Duration
		distinct  bool
		tries     map[string][]try
		until     map[string]time.Time
	}
	rules := []*rule{
		{name: "failed-login-burst", window: 24 * time.Hour, threshold: 5, ttl: 5 * time.Minute},
		{name: "account-enumeration", window: 10 * time.Minute, threshold: 11, ttl: time.Hour, distinct: true},
	}
	for _, r := range rules {
		r.tries, r.until = map[string][]try{}, map[string]time.Time{}
	}
	var out []string
	for _, line := range lines {
		var ev struct{ TS, ClientIP, Username string }
		if err := json.Unmarshal([]byte(line), &struct {
			TS       *string `json:"ts"`
			ClientIP *string `json:"client_ip"`
			Username *string `json:"username"`
		}{&ev.TS, &ev.ClientIP, &ev.Username}); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339Nano, ev.TS)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			ip := ev.ClientIP
			if until, ok := r.until[ip]; ok && !at.Before(until) {
				delete(r.until, ip)
				delete(r.tries, ip)
			}
			tries := r.tries[ip]
			if !r.distinct && len(tries) > 0 && !tries[len(tries)-1].at.After(at.Add(-r.window)) {
				tries = nil
			}
			tries = append(tries, try{at, ev.Username})
			r.tries[ip] = tries
			n, users := 0, map[string]bool{}
			for _, tr := range tries {
				if tr.at.After(at.Add(-r.window)) {
					n++
					users[tr.user] = true
				}
			}
			count := len(tries)
			if r.distinct {
				n, count = len(users), len(users)
			}
			if n < r.threshold {
				continue
			}
			_, renewal := r.until[ip]
			r.until[ip] = at.Add(r.ttl)
			out = append(out, fmt.Sprintf("%s %s %s %d %v", at.UTC().Format(time.RFC3339Nano), r.name, ip, count, renewal))
		}
	}
	return out
}

// A 200 MB line in the middle of a log is skipped and counted, and every
// decision around it is printed, whichever way the log runs.
func TestA200MBLineIsSkippedAndCounted(t *testing.T) {
	var before, after []string
	for i := range 5 {
		before = append(before, fmt.Sprintf(`{"ts":"2026-11-22T10:00:0%dZ","action":"auth_failed","client_ip":"203.0.113.1"}`, i))
		after = append(after, fmt.Sprintf(`{"ts":"2026-11-22T10:01:0%dZ","action":"auth_failed","client_ip":"203.0.113.2"}`, i))
	}
	// Written a piece at a time: the test holds no 200 MB string.
	writeLog := func(name string, lines []string) string {
		p := filepath.Join(t.TempDir(), name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriterSize(f, 1<<20)
		for _, l := range lines {
			if l != "huge" {
				w.WriteString(l + "\n")
				continue
			}
			w.WriteString(`{"ts":"2026-11-22T10:00:30Z","action":"auth_failed","client_ip":"203.0.113.3","pad":"`)
			pad := strings.Repeat("x", 1<<20)
			for range 200 {
				w.WriteString(pad)
			}
			w.WriteString("\"}\n")
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	lines := append(append(append([]string{}, before...), "huge"), after...)
	up := writeLog("up.log", lines)
	slices.Reverse(lines)
	down := writeLog("down.log", lines)
	for _, log := range []string{up, down} {
		out, summary, err := runCLI(t, nil, "replay", "-o", "jsonl", log)
		if err != nil {
			t.Fatalf("%s: %v", log, err)
		}
		if !strings.Contains(out, `"key":"203.0.113.1","action":"block"`) || !strings.Contains(out, `"key":"203.0.113.2","action":"block"`) ||
			strings.Contains(out, "203.0.113.3") || !strings.Contains(summary, "replayed 11 lines: 10 events, 1 skipped (too_long 1)") {
			t.Errorf("%s:\n%s%s", log, out, summary)
		}
	}
}

package logfile

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
)

var jsonLines = JSON(loki.NewParser(loki.DefaultFields, 0, 0, true), loki.NewParser(loki.DefaultFields, 0, 0, false))

// read streams the inputs and returns the events' addresses in the order
// given out.
func read(t *testing.T, o Options, inputs ...Input) ([]string, Stats, error) {
	t.Helper()
	if o.Parse == nil {
		o.Parse = jsonLines
	}
	if o.MaxLine == 0 {
		o.MaxLine = 1 << 16
	}
	var got []string
	var last time.Time
	st, err := Stream(context.Background(), inputs, o, func(ev *detector.Event) error {
		if ev.Time.Before(last) {
			t.Errorf("%s at %s given out after %s", ev.IP, ev.Time, last)
		}
		last = ev.Time
		got = append(got, ev.IP.String())
		return nil
	})
	return got, st, err
}

func text(name, s string) Input { return Input{Name: name, R: strings.NewReader(s)} }

// file writes s and opens it as a plain file input.
func file(t *testing.T, name, s string) Input {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return Input{Name: p, R: f, File: f}
}

func raw(sec int, ip string) string {
	return fmt.Sprintf(`{"ts":"2026-11-22T10:%02d:%02dZ","action":"auth_failed","client_ip":"%s"}`, sec/60, sec%60, ip)
}

func TestReadBothFormatsIntoTimeOrder(t *testing.T) {
	in := strings.Join([]string{
		`{"ts":"2026-11-22T10:00:01Z","action":"auth_failed","client_ip":"192.0.2.1"}`,
		`{"labels":{"service":"audit"},"line":"{\"action\":\"auth_failed\",\"client_ip\":\"192.0.2.2\"}","timestamp":"2026-11-22T10:00:02Z"}`,
		``,
		`not json`,
		`{"ts":"yesterday","action":"auth_failed","client_ip":"192.0.2.3"}`,
		`{"labels":{},"line":"{\"action\":\"auth_failed\"}","timestamp":"2026-11-22T10:00:03Z"}`,
	}, "\n")
	got, st, err := read(t, Options{Window: time.Minute}, text("in", in))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "192.0.2.1 192.0.2.2" {
		t.Fatalf("events %v", got)
	}
	if st.Lines != 5 || st.Events != 2 || st.Skipped["not_json"] != 1 || st.Skipped["bad_time"] != 1 || st.Skipped["no_client_ip"] != 1 {
		t.Errorf("stats %+v", st)
	}
	if st.FirstSkip == nil || st.FirstSkip.String() != "in:4: not_json (line is not a JSON object)" {
		t.Errorf("first skip %v", st.FirstSkip)
	}
}

func TestExactRepeatsAreOneEvent(t *testing.T) {
	line, other := raw(1, "192.0.2.1"), raw(1, "192.0.2.2")
	got, st, err := read(t, Options{Window: time.Minute}, text("in", line+"\n"+other+"\n"+line+"\n"))
	if err != nil || len(got) != 2 || st.Duplicates != 1 || st.Events != 2 {
		t.Fatalf("events %v duplicates %d err %v", got, st.Duplicates, err)
	}
}

// Newest-first logs (logcli's default) come out oldest first: a plain file
// read backward in place, a pipe or a gzip stream through a temporary copy.
// Several inputs, in either direction and overlapping, merge into one
// stream with each entry once.
func TestInputsInEitherDirectionMergeIntoTimeOrder(t *testing.T) {
	var up, down []string
	for i := range 3000 {
		up = append(up, raw(i, fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)))
	}
	for i := len(up) - 1; i >= 0; i-- {
		down = append(down, up[i])
	}
	ascending := strings.Join(up, "\n") + "\n"
	descending := strings.Join(down, "\r\n") // CRLF, no final newline
	want, _, err := read(t, Options{Window: time.Second}, text("up", ascending))
	if err != nil || len(want) != 3000 {
		t.Fatalf("ascending: %d events, %v", len(want), err)
	}
	tmp := t.TempDir()
	for name, inputs := range map[string][]Input{
		"a newest-first file":         {file(t, "down.log", descending)},
		"a newest-first pipe":         {{Name: "-", R: io.MultiReader(strings.NewReader(descending))}},
		"overlapping halves, crossed": {text("a", strings.Join(up[:2000], "\n")), file(t, "b.log", strings.Join(down[:2000], "\n"))},
		"the same file twice":         {file(t, "x.log", ascending), file(t, "y.log", ascending)},
	} {
		got, st, err := read(t, Options{Window: time.Second, TempDir: tmp}, inputs...)
		if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: %d events (%v), want the %d of the ascending file", name, len(got), err, len(want))
		}
		if st.Events != 3000 {
			t.Errorf("%s: %+v", name, st)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("temporary copies left behind: %v", left)
	}
}

// Entries a little out of order (several writers to one log) are put in
// order within the window; beyond it the input is refused, naming the line.
func TestTheReorderWindow(t *testing.T) {
	in := strings.Join([]string{raw(10, "192.0.2.1"), raw(12, "192.0.2.3"), raw(11, "192.0.2.2"), raw(13, "192.0.2.4")}, "\n")
	got, _, err := read(t, Options{Window: 5 * time.Second}, text("in", in))
	if err != nil || strings.Join(got, " ") != "192.0.2.1 192.0.2.2 192.0.2.3 192.0.2.4" {
		t.Errorf("within the window: %v %v", got, err)
	}
	in = strings.Join([]string{raw(10, "192.0.2.1"), raw(30, "192.0.2.3"), raw(40, "192.0.2.4"), raw(11, "192.0.2.2")}, "\n")
	_, _, err = read(t, Options{Window: 5 * time.Second}, text("in", in))
	if err == nil || !strings.Contains(err.Error(), "in: line 4: an entry of 2026-11-22 10:00:11 UTC is 19s older than one already replayed (2026-11-22 10:00:30 UTC)") {
		t.Errorf("beyond the window: %v", err)
	}
	// Beside a good input, the bad one still stops the replay: nothing is
	// decided past the line it failed at.
	var good []string
	for i := range 100 {
		good = append(good, raw(i, "192.0.2.9"))
	}
	got, _, err = read(t, Options{Window: 5 * time.Second}, text("good", strings.Join(good, "\n")), text("bad", in))
	if err == nil || !strings.HasPrefix(err.Error(), "bad: line 4") || len(got) >= 100 {
		t.Errorf("a bad input beside a good one: %d events given out, %v", len(got), err)
	}
}

// The entries held to put an input in order are bounded in number too: a
// wide window over a dense log cannot make the reader hold the whole file.
func TestEntriesHeldAreBounded(t *testing.T) {
	r := reorder{window: 24 * time.Hour, maxHeld: 100}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	given := 0
	for i := range 5000 {
		ready, err := r.push(detector.Event{Time: t0.Add(time.Duration(i) * time.Second)}, i+1)
		if err != nil {
			t.Fatal(err)
		}
		given += len(ready)
		if r.held() > 100 {
			t.Fatalf("%d entries held after %d read, bound 100", r.held(), i+1)
		}
	}
	if given += len(r.drain()); given != 5000 {
		t.Errorf("%d entries given out of 5000", given)
	}
}

// Long lines are skipped and counted in either direction; the lines around
// them are read.
func TestLongLinesAreSkippedEitherWay(t *testing.T) {
	long := `{"ts":"2026-11-22T10:00:05Z","action":"auth_failed","client_ip":"192.0.2.9","pad":"` + strings.Repeat("p", 600<<10) + `"}`
	lines := []string{raw(1, "192.0.2.1"), raw(2, "192.0.2.2"), long, raw(7, "192.0.2.7"), raw(8, "192.0.2.8")}
	up := strings.Join(lines, "\n")
	down := strings.Join([]string{lines[4], lines[3], lines[2], lines[1], lines[0]}, "\n")
	for name, in := range map[string]Input{"oldest first": text("up", up), "newest first, read backward": file(t, "down.log", down)} {
		got, st, err := read(t, Options{Window: time.Minute, MaxLine: 64 << 10}, in)
		if err != nil || strings.Join(got, " ") != "192.0.2.1 192.0.2.2 192.0.2.7 192.0.2.8" || st.Skipped[loki.SkipTooLong] != 1 || st.Lines != 5 {
			t.Errorf("%s: %v %+v %v", name, got, st, err)
		}
	}
}

// Package logfile reads audit events from files for offline replay: raw
// JSON audit lines (their event time is the line's ts field) or the output of
// `logcli query --output=jsonl` (the Loki entry timestamp is the event time),
// one entry a line, in any order.
package logfile

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
)

// Stats counts what a read found.
type Stats struct {
	Lines      int
	Events     int
	Duplicates int
	Skipped    map[string]int // by reason
	// FirstSkip is the first line skipped, for a message that names it.
	FirstSkip *Skip
}

// Skip is one skipped line: its number in its input and why.
type Skip struct {
	Line   int
	Reason string
	Detail string
}

// LineParser turns one line of a log into an event, or returns a
// *loki.SkipError saying why it is not one.
type LineParser func(text string) (detector.Event, error)

// JSON reads JSON lines: lineTime parses raw audit lines with their own ts
// field; entry parses the line of a logcli entry with its timestamp.
func JSON(lineTime, entry *loki.Parser) LineParser {
	return func(text string) (detector.Event, error) { return parse(text, lineTime, entry) }
}

// Read parses every line of r with parse. Lines longer than maxLine bytes
// are counted as too_long and skipped. The events come back in time order
// (stable for equal times), as the detector needs them; logcli writes
// newest first by default.
func Read(r io.Reader, parseLine LineParser, maxLine int) ([]detector.Event, Stats, error) {
	st := Stats{Skipped: map[string]int{}}
	var events []detector.Event
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		text, tooLong, err := readLine(br, maxLine)
		if err != nil && err != io.EOF {
			return nil, st, fmt.Errorf("read line %d: %w", st.Lines+1, err)
		}
		switch {
		case tooLong:
			// Counted and skipped; never the end of the run.
			st.Lines++
			st.Skipped[loki.SkipTooLong]++
			if st.FirstSkip == nil {
				st.FirstSkip = &Skip{Line: st.Lines, Reason: loki.SkipTooLong, Detail: "longer than " + fmt.Sprint(maxLine) + " bytes"}
			}
		case text != "":
			st.Lines++
			ev, perr := parseLine(text)
			if perr != nil {
				reason, detail := "unknown", perr.Error()
				if se, ok := loki.IsSkip(perr); ok {
					reason, detail = se.Reason, se.Detail
				}
				st.Skipped[reason]++
				if st.FirstSkip == nil {
					st.FirstSkip = &Skip{Line: st.Lines, Reason: reason, Detail: detail}
				}
				break
			}
			events = append(events, ev)
		}
		if err == io.EOF {
			break
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(events[j].Time) })
	kept, dups := Dedup(events)
	st.Duplicates += dups
	st.Events = len(kept)
	return kept, st, nil
}

// Dedup drops the repeats of events sorted by time: the same entry twice
// (a log exported from overlapping queries, or the same file given twice)
// is one event, as Loki itself stores an exact repeat once. It returns the
// events kept and how many were repeats.
func Dedup(events []detector.Event) ([]detector.Event, int) {
	kept, dups := events[:0], 0
	for i, ev := range events {
		dup := false
		for j := i - 1; j >= 0 && events[j].Time.Equal(ev.Time); j-- {
			if events[j].Line == ev.Line {
				dup = true
				break
			}
		}
		if dup {
			dups++
			continue
		}
		kept = append(kept, ev)
	}
	return kept, dups
}

// readLine reads one line of any length, without its line ending. A line
// longer than limit is read past and reported as tooLong, its text dropped,
// so memory stays bounded by limit. At the end of r it returns io.EOF with
// the last line, if it had no newline.
func readLine(br *bufio.Reader, limit int) (text string, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(frag) > limit+2 { // +2: the line ending
				tooLong, buf = true, nil
			} else {
				buf = append(buf, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		line := strings.TrimRight(string(buf), "\r\n")
		if tooLong {
			line = ""
		}
		return line, tooLong, err
	}
}

func parse(text string, lineTime, entry *loki.Parser) (detector.Event, error) {
	if stamp, line, ok := loki.LogcliEntry(text); ok {
		ts, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil {
			return detector.Event{}, &loki.SkipError{Reason: loki.SkipBadTime, Detail: "logcli timestamp " + stamp}
		}
		return entry.Parse(ts.UTC(), line)
	}
	return lineTime.Parse(time.Time{}, text)
}

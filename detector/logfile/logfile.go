// Package logfile reads audit events from files for offline replay: raw
// JSON audit lines (their event time is the line's ts field), the output of
// `logcli query --output=jsonl` (the Loki entry timestamp is the event time),
// or plain text through a Format; one entry a line, oldest or newest first,
// several inputs merged into one stream in time order.
package logfile

import (
	"bufio"
	"bytes"
	"fmt"
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

// Skip is one skipped line: its input, its number there and why.
type Skip struct {
	Input string
	Line  int
	// FromEnd: the input was read backward (newest first), and Line
	// counts from its end.
	FromEnd bool
	Reason  string
	Detail  string
}

func (s *Skip) String() string {
	if s.FromEnd {
		return fmt.Sprintf("%s, line %d from the end: %s (%s)", s.Input, s.Line, s.Reason, s.Detail)
	}
	return fmt.Sprintf("%s:%d: %s (%s)", s.Input, s.Line, s.Reason, s.Detail)
}

// LineParser turns one line of a log into an event, or returns a
// *loki.SkipError saying why it is not one.
type LineParser func(text string) (detector.Event, error)

// JSON reads JSON lines: lineTime parses raw audit lines with their own ts
// field; entry parses the line of a logcli entry with its timestamp.
func JSON(lineTime, entry *loki.Parser) LineParser {
	return func(text string) (detector.Event, error) { return parse(text, lineTime, entry) }
}

// readLine reads one line of any length, without its line ending. A line
// longer than limit is read past and reported as tooLong, its text dropped,
// so memory stays bounded by limit. At the end of r it returns io.EOF with
// the last line, if it had no newline.
func readLine(br *bufio.Reader, limit int) (text string, tooLong bool, err error) {
	frag, err := br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		// The usual line, whole in the reader's buffer: one copy.
		if len(frag) > limit+2 { // +2: the line ending
			return "", true, err
		}
		return string(bytes.TrimRight(frag, "\r\n")), false, err
	}
	var buf []byte
	for {
		if !tooLong {
			if len(buf)+len(frag) > limit+2 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, frag...)
			}
		}
		if err != bufio.ErrBufferFull {
			if tooLong {
				return "", true, err
			}
			return string(bytes.TrimRight(buf, "\r\n")), false, err
		}
		frag, err = br.ReadSlice('\n')
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

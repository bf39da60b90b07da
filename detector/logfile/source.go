package logfile

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
)

// Input is one log to read.
type Input struct {
	// Name is how messages name it: its path, or "-".
	Name string
	// R reads it from its start, decompressed.
	R io.Reader
	// File is the input when it is a plain file that R reads as it is
	// (not compressed): a newest-first log is then read backward in
	// place. Otherwise such a log is first copied to a temporary file.
	File *os.File
}

// Options say how inputs are read.
type Options struct {
	Parse   LineParser
	MaxLine int // longer lines are skipped as too_long
	// Window is how far out of time order an input's entries may be: an
	// entry is held until entries this much later were read. Window
	// bounds the entries held too.
	Window time.Duration
	// MaxHeld bounds the entries held per input to put them in order.
	MaxHeld int
	// TempDir is where a newest-first input that cannot be read backward
	// in place is copied ("": the system's).
	TempDir string
}

// Probe bounds: the first lines of an input, read to tell its direction.
const (
	probeLines = 1024
	probeBytes = 4 << 20
	batchSize  = 512
)

// source reads one input into batches of events in time order.
type source struct {
	in    Input
	o     Options
	st    Stats
	order reorder
	out   chan []detector.Event
	batch []detector.Event
	at    int   // lines read, empty ones too: the current line's number
	err   error // set before out is closed
}

type rawLine struct {
	text    string
	tooLong bool
}

// run reads the input and closes out; s.err says why it stopped early.
func (s *source) run(ctx context.Context) {
	defer close(s.out)
	s.err = s.read(ctx)
	if s.err == nil {
		s.err = s.flush(ctx, true)
	}
}

func (s *source) read(ctx context.Context) error {
	br := bufio.NewReaderSize(s.in.R, 64<<10)
	prefix, eof, err := s.probe(br)
	if err != nil {
		return err
	}
	if !s.newestFirst(prefix) {
		for _, l := range prefix {
			if err := s.line(ctx, l); err != nil {
				return err
			}
		}
		for !eof {
			text, tooLong, err := readLine(br, s.o.MaxLine)
			if err != nil && err != io.EOF {
				return fmt.Errorf("read line %d: %w", s.at+1, err)
			}
			eof = err == io.EOF
			if err := s.line(ctx, rawLine{text, tooLong}); err != nil {
				return err
			}
		}
		return nil
	}
	s.order.fromEnd = true
	file, size := s.in.File, int64(0)
	if file != nil {
		fi, err := file.Stat()
		if err != nil {
			return err
		}
		size = fi.Size()
	} else {
		// Not a plain file: copied to one, which is read backward.
		if file, size, err = s.spill(prefix, br); err != nil {
			return err
		}
		defer os.Remove(file.Name())
		defer file.Close()
	}
	back := newBackward(file, size, s.o.MaxLine)
	for {
		text, tooLong, err := back.next()
		if err != nil && err != io.EOF {
			return err
		}
		if lerr := s.line(ctx, rawLine{text, tooLong}); lerr != nil {
			return lerr
		}
		if err == io.EOF {
			return nil
		}
	}
}

// probe reads the input's first lines.
func (s *source) probe(br *bufio.Reader) (prefix []rawLine, eof bool, err error) {
	size := 0
	for len(prefix) < probeLines && size < probeBytes {
		text, tooLong, err := readLine(br, s.o.MaxLine)
		if err != nil && err != io.EOF {
			return nil, false, fmt.Errorf("read line %d: %w", len(prefix)+1, err)
		}
		prefix = append(prefix, rawLine{text, tooLong})
		size += len(text)
		if err == io.EOF {
			return prefix, true, nil
		}
	}
	return prefix, false, nil
}

// newestFirst says whether the first lines go back in time: the last event
// among them is older than the first.
func (s *source) newestFirst(prefix []rawLine) bool {
	var first, last time.Time
	for _, l := range prefix {
		if l.tooLong || l.text == "" {
			continue
		}
		ev, err := s.o.Parse(l.text)
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = ev.Time
		}
		last = ev.Time
	}
	return last.Before(first)
}

// spill copies the input to a temporary file: the lines already read, then
// the rest.
func (s *source) spill(prefix []rawLine, rest io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp(s.o.TempDir, "authguard-replay-*.log")
	if err != nil {
		return nil, 0, fmt.Errorf("%s is newest first and is not a plain file: copying it to read it backward: %w", s.in.Name, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var size int64
	for _, l := range prefix {
		if l.tooLong {
			s.skip(loki.SkipTooLong, fmt.Sprintf("longer than %d bytes", s.o.MaxLine))
			continue
		}
		n, _ := w.WriteString(l.text + "\n")
		size += int64(n)
	}
	n, err := io.Copy(w, rest)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, fmt.Errorf("%s: copying it to read it backward: %w", s.in.Name, err)
	}
	return f, size + n, nil
}

// line counts and parses one line and puts its event in order.
func (s *source) line(ctx context.Context, l rawLine) error {
	s.at++
	switch {
	case l.tooLong:
		s.skip(loki.SkipTooLong, fmt.Sprintf("longer than %d bytes", s.o.MaxLine))
		return nil
	case l.text == "":
		return nil
	}
	ev, err := s.o.Parse(l.text)
	if err != nil {
		reason, detail := "unknown", err.Error()
		if se, ok := loki.IsSkip(err); ok {
			reason, detail = se.Reason, se.Detail
		}
		s.skip(reason, detail)
		return nil
	}
	s.st.Lines++
	s.st.Events++
	ready, err := s.order.push(ev, s.at)
	if err != nil {
		return err
	}
	s.batch = append(s.batch, ready...)
	if len(s.batch) >= batchSize {
		return s.flush(ctx, false)
	}
	return nil
}

// skip counts a line skipped, and keeps the first for messages.
func (s *source) skip(reason, detail string) {
	s.st.Lines++
	s.st.Skipped[reason]++
	if s.st.FirstSkip == nil {
		s.st.FirstSkip = &Skip{Input: s.in.Name, Line: s.at, FromEnd: s.order.fromEnd, Reason: reason, Detail: detail}
	}
}

// flush sends the events in order so far; at the end, every one held.
func (s *source) flush(ctx context.Context, end bool) error {
	if end {
		s.batch = append(s.batch, s.order.drain()...)
	}
	if len(s.batch) == 0 {
		return nil
	}
	select {
	case s.out <- s.batch:
		s.batch = make([]detector.Event, 0, batchSize)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

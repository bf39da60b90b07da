package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"gopkg.in/yaml.v3"
)

// outputFlag is -o/--output, the same on every command that lists.
type outputFlag struct {
	Output string `short:"o" help:"table, json (one array), jsonl (one object a line) or yaml." default:"table" enum:"table,json,jsonl,yaml"`
}

// list writes rows (a slice of structs with json tags) in the chosen
// format; table writes the table for people.
func list[T any](o outputFlag, w io.Writer, rows []T, table func(tw *tabwriter.Writer)) error {
	if o.Output == "table" {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	s := newItemWriter(o.Output, w)
	for _, r := range rows {
		if err := s.add(r); err != nil {
			return err
		}
	}
	return s.close()
}

// itemWriter writes items one at a time in a machine format, as they
// come: a JSON array ([] when empty: scripts iterate it), JSON lines, or
// a YAML list with the json names (one vocabulary whatever the format).
type itemWriter struct {
	format string
	w      *bufio.Writer
	n      int
}

func newItemWriter(format string, w io.Writer) *itemWriter {
	return &itemWriter{format: format, w: bufio.NewWriterSize(w, 64<<10)}
}

func (s *itemWriter) add(v any) error {
	s.n++
	switch s.format {
	case "jsonl":
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		s.w.Write(b)
		return s.w.WriteByte('\n')
	case "json":
		b, err := json.MarshalIndent(v, "  ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n  "
		if s.n == 1 {
			sep = "[\n  "
		}
		s.w.WriteString(sep)
		_, err = s.w.Write(b)
		return err
	}
	var generic any
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, &generic)
	}
	if err != nil {
		return err
	}
	enc := yaml.NewEncoder(s.w)
	enc.SetIndent(2)
	if err := enc.Encode([]any{generic}); err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	return enc.Close()
}

// close ends the output (the JSON array's bracket, an empty list) and
// flushes it.
func (s *itemWriter) close() error {
	switch {
	case s.format == "jsonl":
	case s.n == 0:
		s.w.WriteString("[]\n")
	case s.format == "json":
		s.w.WriteString("\n]\n")
	}
	return s.w.Flush()
}

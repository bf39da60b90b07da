package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/authguard/authguard/detector"
)

// side is one rule set replayed over the events: its loop, and what it
// does with each decision as it is made.
type side struct {
	loop   *detector.Loop
	byRule map[string]int // decisions per rule and severity
	count  int
	firsts firsts // first block and alert per rule and key, when compared
	emit   func(replayDecision) error
}

func newSide(engine *detector.Engine, emit func(replayDecision) error) *side {
	s := &side{byRule: map[string]int{}, emit: emit}
	// The events come in time order: the loop counts each at its own time.
	s.loop = detector.NewLoop(engine, func(_ context.Context, d detector.Decision, _ detector.Event, _ uint64) error {
		rd := toReplayDecision(d)
		s.count++
		s.byRule[rd.Rule+" "+rd.Severity]++
		if s.firsts != nil {
			s.firsts.add(rd)
		}
		if s.emit != nil {
			return s.emit(rd)
		}
		return nil
	})
	return s
}

func toReplayDecision(d detector.Decision) replayDecision {
	rd := replayDecision{Time: d.Time.UTC().Format(time.RFC3339Nano), Rule: d.Rule, Key: d.Key, Action: string(d.Kind),
		Severity: d.Severity, Count: d.Count, Renewal: d.Renewal, GroupBy: d.GroupBy, SourceOf: d.SourceOf}
	for _, a := range d.Sources {
		rd.Sources = append(rd.Sources, a.String())
	}
	if d.Kind == detector.KindBlock || d.Kind == detector.KindProtect {
		rd.TTLSeconds = int64(d.TTL / time.Second)
	}
	return rd
}

// decisionPrinter writes decisions as they are made, in one of the -o
// formats; the table folds renewals into their block's row, so it is
// written at the end (its rows, not the decisions, are held).
type decisionPrinter struct {
	format   string
	w        *bufio.Writer
	n        int
	renewals bool // the table lists renewals as rows of their own
	rows     []replayDecision
	folded   []int
	open     map[[3]string]int // rule, key, action → its row
}

func newDecisionPrinter(format string, w io.Writer, renewals bool) *decisionPrinter {
	return &decisionPrinter{format: format, w: bufio.NewWriterSize(w, 64<<10), renewals: renewals, open: map[[3]string]int{}}
}

func (p *decisionPrinter) add(d replayDecision) error {
	p.n++
	switch p.format {
	case "jsonl":
		b, err := json.Marshal(d)
		if err != nil {
			return err
		}
		p.w.Write(b)
		return p.w.WriteByte('\n')
	case "json":
		b, err := json.MarshalIndent(d, "  ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n  "
		if p.n == 1 {
			sep = "[\n  "
		}
		p.w.WriteString(sep)
		_, err = p.w.Write(b)
		return err
	case "yaml":
		return p.yaml(d)
	}
	p.fold(d)
	return nil
}

// yaml writes d as an item of a YAML list, with the json names.
func (p *decisionPrinter) yaml(d replayDecision) error {
	var generic any
	b, err := json.Marshal(d)
	if err == nil {
		err = json.Unmarshal(b, &generic)
	}
	if err != nil {
		return err
	}
	enc := yaml.NewEncoder(p.w)
	enc.SetIndent(2)
	if err := enc.Encode([]any{generic}); err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	return enc.Close()
}

// fold keeps a table row per decision that is not a renewal, counting the
// renewals of it that follow (same rule, key and action).
func (p *decisionPrinter) fold(d replayDecision) {
	k := [3]string{d.Rule, d.Key, d.Action}
	if i, ok := p.open[k]; ok && d.Renewal && !p.renewals {
		p.folded[i]++
		p.rows[i].Count = d.Count // the tally it reached
		return
	}
	p.open[k] = len(p.rows)
	p.rows = append(p.rows, d)
	p.folded = append(p.folded, 0)
}

// close ends the output: the end of the JSON array, or the table.
func (p *decisionPrinter) close() error {
	switch p.format {
	case "json":
		if p.n == 0 {
			p.w.WriteString("[]\n")
		} else {
			p.w.WriteString("\n]\n")
		}
	case "yaml":
		if p.n == 0 {
			p.w.WriteString("[]\n")
		}
	case "table":
		p.table()
	}
	return p.w.Flush()
}

func (p *decisionPrinter) table() {
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tRULE\tKEY\tACTION\tTTL\tSEVERITY\tCOUNT\tRENEWALS")
	for i, d := range p.rows {
		ttl := "-"
		if d.TTLSeconds > 0 {
			ttl = detector.FormatDuration(time.Duration(d.TTLSeconds) * time.Second)
		}
		renewed := strconv.Itoa(p.folded[i])
		if p.renewals {
			renewed = "-" // unfolded: this row is one
			if d.Renewal {
				renewed = "renewal"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Time, d.Rule, dash(d.Key), d.Action, ttl, d.Severity, d.Count, renewed)
	}
	tw.Flush()
}

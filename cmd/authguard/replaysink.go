package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

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
	rd := replayDecision{at: d.Time, Time: d.Time.UTC().Format(time.RFC3339Nano), Rule: d.Rule, Key: d.Key, Action: string(d.Kind),
		Severity: d.Severity, Count: d.Count, Renewal: d.Renewal, GroupBy: d.GroupBy, SourceOf: d.SourceOf}
	for _, a := range d.Sources {
		rd.Sources = append(rd.Sources, a.String())
	}
	if d.Kind == detector.KindBlock || d.Kind == detector.KindProtect {
		rd.TTLSeconds = int64(d.TTL / time.Second)
	}
	return rd
}

// incident is a decision with the renewals that followed it folded in
// (same rule, key and action): a block and its renewals, or an alert.
type incident struct {
	first    replayDecision
	last     time.Time
	count    int // the tally it reached: its last decision's
	peak     int // the highest tally on the way
	renewals int
	severity string // the most severe it reached (P1 first)
}

// incidents folds decisions into incidents as they are made.
type incidents struct {
	list []incident
	open map[[3]string]int // rule, key, action → its incident
}

// add folds d into its incident, or opens one; unfolded, every decision is
// one of its own.
func (f *incidents) add(d replayDecision, fold bool) {
	k := [3]string{d.Rule, d.Key, d.Action}
	if i, ok := f.open[k]; ok && d.Renewal && fold {
		in := &f.list[i]
		in.renewals++
		in.last, in.count, in.peak = d.at, d.Count, max(in.peak, d.Count)
		in.severity = min(in.severity, d.Severity)
		return
	}
	if f.open == nil {
		f.open = map[[3]string]int{}
	}
	f.open[k] = len(f.list)
	f.list = append(f.list, incident{first: d, last: d.at, count: d.Count, peak: d.Count, severity: d.Severity})
}

// decisionPrinter writes decisions as they are made, in one of the -o
// formats; the table folds renewals into their block's row, so it is
// written at the end (its rows, not the decisions, are held).
type decisionPrinter struct {
	items    *itemWriter // the machine formats
	w        io.Writer
	renewals bool // the table lists renewals as rows of their own
	rows     incidents
}

func newDecisionPrinter(format string, w io.Writer, renewals bool) *decisionPrinter {
	p := &decisionPrinter{w: w, renewals: renewals}
	if format != "table" {
		p.items = newItemWriter(format, w)
	}
	return p
}

func (p *decisionPrinter) add(d replayDecision) error {
	if p.items != nil {
		return p.items.add(d)
	}
	p.rows.add(d, !p.renewals)
	return nil
}

// close ends the output: the end of the JSON array, or the table.
func (p *decisionPrinter) close() error {
	if p.items != nil {
		return p.items.close()
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tRULE\tKEY\tACTION\tTTL\tSEVERITY\tCOUNT\tRENEWALS")
	for _, in := range p.rows.list {
		d := in.first
		ttl := "-"
		if d.TTLSeconds > 0 {
			ttl = detector.FormatDuration(time.Duration(d.TTLSeconds) * time.Second)
		}
		renewed := strconv.Itoa(in.renewals)
		if p.renewals {
			renewed = "-" // unfolded: this row is one
			if d.Renewal {
				renewed = "renewal"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Time, d.Rule, dash(d.Key), d.Action, ttl, d.Severity, in.count, renewed)
	}
	return tw.Flush()
}

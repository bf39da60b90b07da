package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authguard/authguard/cmd/internal/exitcode"
	"github.com/authguard/authguard/cmd/internal/lokiflag"
	"github.com/authguard/authguard/cmd/internal/secret"
	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/logfile"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder/auditsig"
	"github.com/authguard/authguard/rules"
)

type replayCmd struct {
	Rules string `help:"Rules file (YAML). Empty: the embedded default rules." placeholder:"FILE"`
	outputFlag
	AuditFields        []string `help:"Audit fields read from each line beyond action, client_ip, username and ts (the fields the rules name are read too)." default:"${audit_fields}" placeholder:"FIELD,..."`
	MaxLineBytes       int      `help:"Longest excerpt of a line kept with a decision; lines are read whole for their fields up to --max-line-hard-bytes." default:"16384"`
	MaxLineHardBytes   int      `help:"Longest audit line read at all; longer lines are counted as too_long and skipped (the run goes on)." default:"1048576"`
	AuditVerifyKeyFile []string `help:"Count only audit lines signed with one of these keys (as the daemon's --audit-verify-key-file)." placeholder:"FILE,..."`
	Format             string   `help:"Read plain-text logs with this regular expression: named groups client_ip (or fail2ban's <HOST>) and ts, optionally username and success (matched text: the login worked); other lines are skipped." placeholder:"REGEX"`
	TimeFormat         string   `help:"Go time layout of --format's ts group, e.g. \"Jan _2 15:04:05\" for syslog (default RFC 3339)." placeholder:"LAYOUT"`
	Year               int      `help:"Year of --format times whose layout has none (default: this year)."`
	Renewals           bool     `help:"List every renewal of a block as its own row in the table (by default a block's renewals are folded into its row and counted)."`
	Baseline           string   `help:"Also replay these rules and print what changes from them to --rules instead of the decisions: keys blocked only by one side, blocked earlier or later, alerts gained and lost." placeholder:"FILE"`
	Report             string   `help:"Also write a self-contained HTML page for post-incident review: attempts per minute with each decision marked, top offenders." placeholder:"FILE.html"`
	LokiURL            string   `help:"Read the history from this Loki (query_range, as the daemon's backfill reads it) instead of files." placeholder:"URL" group:"Loki"`
	LokiQuery          string   `help:"LogQL query selecting the audit events in Loki." default:"${loki_query}" group:"Loki"`
	lokiflag.Loki      `embed:"" group:"Loki"`
	Since              time.Duration `help:"With --loki-url: how far back to read, e.g. 7d." default:"24h" group:"Loki"`
	Until              string        `help:"With --loki-url: the end of the span (RFC 3339; default now)." placeholder:"TIME" group:"Loki"`
	Logs               []string      `arg:"" optional:"" help:"Log files: raw JSON audit lines (time from their ts field) or logcli --output=jsonl; - is standard input, and a .gz file (or any gzip stream) is read through." placeholder:"FILE"`
}

// replayDecision is the jsonl decision format of DESIGN.md.
type replayDecision struct {
	Time       string `json:"time"`
	Rule       string `json:"rule"`
	Key        string `json:"key"`
	Action     string `json:"action"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	Severity   string `json:"severity"`
	Count      int    `json:"count"`
	// Renewal marks a block re-fired during a standing block (a failure
	// that got through, as after an operator deleted only ip_block).
	Renewal bool `json:"renewal,omitempty"`
	// GroupBy and Sources: a rule grouped by a field names it and the
	// addresses in its window; SourceOf marks a block of one of them.
	GroupBy  string   `json:"group_by,omitempty"`
	Sources  []string `json:"sources,omitempty"`
	SourceOf string   `json:"source_of,omitempty"`
}

// Run replays the logs through the same engine the daemon runs and prints
// its decisions; a summary goes to stderr.
func (c *replayCmd) Run(ctx context.Context, e *env) error {
	set, err := loadRules(c.Rules, 0)
	if err != nil {
		return err
	}
	engine, err := detector.New(set.Config)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	fields := loki.DefaultFields.WithAttrs(c.AuditFields...).WithAttrs(set.Fields()...)
	var baseline *rules.Set
	if c.Baseline != "" {
		// Loaded before the logs are read: the lines must carry the
		// fields its rules group by too, or they would count nothing.
		if baseline, err = loadRules(c.Baseline, 0); err != nil {
			return err
		}
		fields = fields.WithAttrs(baseline.Fields()...)
	}
	lineTime := loki.NewParser(fields, c.MaxLineBytes, c.MaxLineHardBytes, true)
	entry := loki.NewParser(fields, c.MaxLineBytes, c.MaxLineHardBytes, false)
	if len(c.AuditVerifyKeyFile) > 0 {
		keys, err := secret.AuditKeys(c.AuditVerifyKeyFile)
		if err != nil {
			return fmt.Errorf("--audit-verify-key-file: %w", err)
		}
		v := auditsig.NewVerifier(keys...)
		lineTime.Verify(v)
		entry.Verify(v)
	}
	var events []detector.Event
	var total logfile.Stats
	switch {
	case c.LokiURL != "" && len(c.Logs) > 0:
		return exitcode.UsageError(errors.New("replay reads files or --loki-url, not both"))
	case c.LokiURL != "":
		events, total, err = c.readLoki(ctx, entry)
	case len(c.Logs) == 0:
		return exitcode.UsageError(errors.New("replay needs log files (- for standard input) or --loki-url"))
	default:
		events, total, err = c.read(e.stderr, lineTime, entry)
	}
	if err != nil {
		return err
	}
	out, byRule := replayDecisions(engine, events)
	if baseline != nil {
		return c.compare(e, events, out, baseline)
	}
	if err := c.print(e.stdout, out); err != nil {
		return err
	}
	if c.Report != "" {
		f, err := os.Create(c.Report)
		if err != nil {
			return err
		}
		err = writeHTMLReport(f, c.Logs, events, out, byRule)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("report %s: %w", c.Report, err)
		}
	}
	summarize(e.stderr, total, len(events), out, byRule)
	return nil
}

// compare replays events with the --baseline rules too and prints what
// changes from them to the rules replayed.
func (c *replayCmd) compare(e *env, events []detector.Event, out []replayDecision, base *rules.Set) error {
	engine, err := detector.New(base.Config)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Baseline, err)
	}
	baseline, _ := replayDecisions(engine, events)
	return c.printChanges(e.stdout, e.stderr, compareRuns(out, baseline))
}

// read reads every log into events, in time order, and what was skipped.
// The same entry in several logs (overlapping exports, a file given twice)
// is one event. It fails when no line could be read as an audit event,
// naming the first line it could not read.
func (c *replayCmd) read(progress io.Writer, lineTime, entry *loki.Parser) ([]detector.Event, logfile.Stats, error) {
	// A logcli line wraps the audit line in JSON: escaping can double it.
	wrapped := 2*lineTime.HardLimit() + 4096
	var events []detector.Event
	total := logfile.Stats{Skipped: map[string]int{}}
	firstSkip := ""
	parseLine := logfile.JSON(lineTime, entry)
	if c.Format != "" {
		year := c.Year
		if year == 0 {
			year = time.Now().Year()
		}
		f, err := logfile.NewFormat(c.Format, c.TimeFormat, year)
		if err != nil {
			return nil, total, exitcode.UsageError(err)
		}
		parseLine = f.Parse
	}
	for _, path := range c.Logs {
		in, closeIn, err := openLog(path, progress)
		if err != nil {
			return nil, total, err
		}
		evs, st, err := logfile.Read(in, parseLine, wrapped)
		closeIn()
		if err != nil {
			return nil, total, fmt.Errorf("%s: %w", path, err)
		}
		events = append(events, evs...)
		total.Lines += st.Lines
		total.Duplicates += st.Duplicates
		for r, n := range st.Skipped {
			total.Skipped[r] += n
		}
		if fs := st.FirstSkip; fs != nil && firstSkip == "" {
			firstSkip = fmt.Sprintf("%s:%d: %s (%s)", path, fs.Line, fs.Reason, fs.Detail)
		}
	}
	if len(c.Logs) > 1 {
		sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(events[j].Time) })
		var dups int
		events, dups = logfile.Dedup(events)
		total.Duplicates += dups
	}
	switch {
	case total.Lines == 0:
		return nil, total, fmt.Errorf("no lines in %s", strings.Join(c.Logs, ", "))
	case len(events) == 0:
		return nil, total, fmt.Errorf("none of the %d lines is an audit event (JSON lines with action and client_ip, logcli --output=jsonl, or plain text read with --format); the first: %s", total.Lines, firstSkip)
	}
	return events, total, nil
}

// readLoki reads the span --since back from --until out of Loki, with
// the daemon's client, auth and paging, into events in time order.
func (c *replayCmd) readLoki(ctx context.Context, entry *loki.Parser) ([]detector.Event, logfile.Stats, error) {
	total := logfile.Stats{Skipped: map[string]int{}}
	until := time.Now()
	if c.Until != "" {
		t, err := time.Parse(time.RFC3339Nano, c.Until)
		if err != nil {
			return nil, total, exitcode.UsageError(fmt.Errorf("--until %q: want an RFC 3339 time such as 2026-11-22T10:00:00Z", c.Until))
		}
		until = t
	}
	if c.Since <= 0 {
		return nil, total, exitcode.UsageError(fmt.Errorf("--since %s: want a positive span such as 7d", c.Since))
	}
	if err := c.Loki.Auth().Check(); err != nil {
		return nil, total, err
	}
	tlsConf, err := c.Loki.TLS() // reads and checks the TLS files once
	if err != nil {
		return nil, total, err
	}
	reg := prometheus.NewRegistry()
	tail, err := loki.NewTail(loki.Config{URL: c.LokiURL, Query: c.LokiQuery, Header: c.Loki.Auth().Apply, TLS: tlsConf},
		entry, slog.New(slog.DiscardHandler), loki.NewMetrics(reg))
	if err != nil {
		return nil, total, exitcode.UsageError(err)
	}
	ch := make(chan detector.Event, 1024)
	var readErr error
	go func() {
		defer close(ch)
		_, readErr = tail.Read(ctx, until.Add(-c.Since), until, ch)
	}()
	var events []detector.Event
	for ev := range ch {
		events = append(events, ev)
	}
	if readErr != nil {
		return nil, total, fmt.Errorf("read %s: %w", c.LokiURL, readErr)
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(events[j].Time) })
	total.Lines = len(events)
	if len(events) == 0 {
		return nil, total, fmt.Errorf("no audit events in %s from %s to %s", c.LokiURL, detector.FormatTime(until.Add(-c.Since)), detector.FormatTime(until))
	}
	return events, total, nil
}

// openLog opens one input: a file, or standard input for "-", read
// through gzip when it is compressed.
func openLog(path string, progress io.Writer) (io.Reader, func(), error) {
	var in io.Reader = os.Stdin
	closeIn := func() {}
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, exitcode.UsageError(err)
		}
		in, closeIn = withProgress(f, path, progress), func() { f.Close() }
	}
	br := bufio.NewReaderSize(in, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			closeIn()
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		return zr, closeIn, nil
	}
	return br, closeIn, nil
}

// replayDecisions runs events through engine, each at its own time as the
// log's clock, and returns the decisions and their count per rule and
// severity.
func replayDecisions(engine *detector.Engine, events []detector.Event) ([]replayDecision, map[string]int) {
	var out []replayDecision
	byRule := map[string]int{}
	// The log is sorted: the loop counts each event at its own time.
	loop := detector.NewLoop(engine, func(_ context.Context, d detector.Decision, _ detector.Event, _ uint64) error {
		rd := replayDecision{Time: d.Time.UTC().Format(time.RFC3339Nano), Rule: d.Rule, Key: d.Key, Action: string(d.Kind),
			Severity: d.Severity, Count: d.Count, Renewal: d.Renewal, GroupBy: d.GroupBy, SourceOf: d.SourceOf}
		for _, a := range d.Sources {
			rd.Sources = append(rd.Sources, a.String())
		}
		if d.Kind == detector.KindBlock || d.Kind == detector.KindProtect {
			rd.TTLSeconds = int64(d.TTL / time.Second)
		}
		out = append(out, rd)
		byRule[d.Rule+" "+d.Severity]++
		return nil
	})
	for _, ev := range events {
		loop.Observe(context.Background(), ev)
	}
	return out, byRule
}

// print writes the decisions: every one in the machine formats; in the
// table, unless --renewals, a block's renewals are folded into its row.
func (c *replayCmd) print(w io.Writer, out []replayDecision) error {
	rows, renewals := out, []int(nil)
	if c.Output == "table" && !c.Renewals {
		rows, renewals = foldRenewals(out)
	}
	return list(c.outputFlag, w, out, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "TIME\tRULE\tKEY\tACTION\tTTL\tSEVERITY\tCOUNT\tRENEWALS")
		for i, d := range rows {
			ttl := "-"
			if d.TTLSeconds > 0 {
				ttl = detector.FormatDuration(time.Duration(d.TTLSeconds) * time.Second)
			}
			renewed := "-" // unfolded: this row is one
			switch {
			case renewals != nil:
				renewed = strconv.Itoa(renewals[i])
			case d.Renewal:
				renewed = "renewal"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Time, d.Rule, dash(d.Key), d.Action, ttl, d.Severity, d.Count, renewed)
		}
	})
}

// foldRenewals keeps the decisions that are not renewals, each with the
// number of renewals of it that followed (same rule, key and action).
func foldRenewals(out []replayDecision) ([]replayDecision, []int) {
	var rows []replayDecision
	var counts []int
	open := map[[3]string]int{} // rule, key, action → its row
	for _, d := range out {
		k := [3]string{d.Rule, d.Key, d.Action}
		if i, ok := open[k]; ok && d.Renewal {
			counts[i]++
			rows[i].Count = d.Count // the tally it reached
			continue
		}
		open[k] = len(rows)
		rows = append(rows, d)
		counts = append(counts, 0)
	}
	return rows, counts
}

// summarize tells what was read, skipped and decided.
func summarize(w io.Writer, total logfile.Stats, events int, out []replayDecision, byRule map[string]int) {
	var skipped []string
	for r, n := range total.Skipped {
		skipped = append(skipped, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(skipped)
	var rules []string
	for r, n := range byRule {
		rules = append(rules, fmt.Sprintf("%s: %d", r, n))
	}
	sort.Strings(rules)
	if total.Duplicates > 0 {
		skipped = append(skipped, fmt.Sprintf("duplicate %d", total.Duplicates))
	}
	fmt.Fprintf(w, "replayed %d lines: %d events, %d skipped (%s); %d decisions (%s)\n",
		total.Lines, events, total.Lines-events, strings.Join(skipped, ", "), len(out), strings.Join(rules, ", "))
}

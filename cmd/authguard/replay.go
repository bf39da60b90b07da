package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
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
	AuditFields        []string      `help:"Audit fields read from each line beyond action, client_ip, username and ts (the fields the rules name are read too)." default:"${audit_fields}" placeholder:"FIELD,..."`
	MaxLineBytes       int           `help:"Longest excerpt of a line kept with a decision; lines are read whole for their fields up to --max-line-hard-bytes." default:"16384"`
	MaxLineHardBytes   int           `help:"Longest audit line read at all; longer lines are counted as too_long and skipped (the run goes on)." default:"1048576"`
	AuditVerifyKeyFile []string      `help:"Count only audit lines signed with one of these keys (as the daemon's --audit-verify-key-file)." placeholder:"FILE,..."`
	Format             string        `help:"Read plain-text logs with this regular expression: named groups client_ip (or fail2ban's <HOST>) and ts, optionally username and success (matched text: the login worked); other lines are skipped." placeholder:"REGEX"`
	TimeFormat         string        `help:"Go time layout of --format's ts group, e.g. \"Jan _2 15:04:05\" for syslog (default RFC 3339)." placeholder:"LAYOUT"`
	Year               int           `help:"Year of --format times whose layout has none (default: this year)."`
	ReorderWindow      time.Duration `help:"How far out of time order a log's lines may be (several writers to one file): lines are held this long to be put in order; a line older than that is refused, naming it. Logs oldest first and newest first (logcli's default) both need none." default:"1m"`
	Sort               bool          `help:"Put the lines in time order whatever their order, holding every event in memory (for a log in no order at all; others need no sorting)."`
	Renewals           bool          `help:"List every renewal of a block as its own row in the table (by default a block's renewals are folded into its row and counted)."`
	Baseline           string        `help:"Also replay these rules and print what changes from them to --rules instead of the decisions: keys blocked only by one side, blocked earlier or later, alerts gained and lost." placeholder:"FILE"`
	Report             string        `help:"Also write a self-contained HTML page for post-incident review: attempts per minute with each decision marked, top offenders." placeholder:"FILE.html"`
	LokiURL            string        `help:"Read the history from this Loki (query_range, as the daemon's backfill reads it) instead of files." placeholder:"URL" group:"Loki"`
	LokiQuery          string        `help:"LogQL query selecting the audit events in Loki." default:"${loki_query}" group:"Loki"`
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

	at time.Time // Time, not written: kept for the review page
}

// Run replays the logs through the same engine the daemon runs and prints
// its decisions as it makes them: reading, deciding and writing go in one
// pass, reading and parsing a step ahead on goroutines of their own, in
// memory bounded by the rules' state, not by the logs. A summary goes to
// stderr.
func (c *replayCmd) Run(ctx context.Context, e *env) error {
	switch {
	case c.LokiURL != "" && len(c.Logs) > 0:
		return exitcode.UsageError(errors.New("replay reads files or --loki-url, not both"))
	case c.LokiURL == "" && len(c.Logs) == 0:
		return exitcode.UsageError(errors.New("replay needs log files (- for standard input) or --loki-url"))
	}
	set, err := loadRules(c.Rules, 0)
	if err != nil {
		return err
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
	lineTime, entry, err := c.parsers(fields)
	if err != nil {
		return err
	}
	sides, printer, report, err := c.sides(e.stdout, set, baseline)
	if err != nil {
		return err
	}
	observe := func(ev *detector.Event) error {
		for _, s := range sides {
			if err := s.loop.Observe(ctx, *ev); err != nil {
				return err
			}
		}
		if report != nil {
			report.event(ev)
		}
		return nil
	}
	var total logfile.Stats
	if c.LokiURL != "" {
		total, err = c.readLoki(ctx, entry, observe)
	} else {
		total, err = c.read(ctx, e.stderr, lineTime, entry, observe)
	}
	if err != nil {
		return err
	}
	return c.finish(e, total, sides, printer, report)
}

// parsers are the audit line parsers: with the line's own ts, and with a
// Loki entry's timestamp; both check signatures with --audit-verify-key-file.
func (c *replayCmd) parsers(fields loki.Fields) (lineTime, entry *loki.Parser, err error) {
	lineTime = loki.NewParser(fields, c.MaxLineBytes, c.MaxLineHardBytes, true)
	entry = loki.NewParser(fields, c.MaxLineBytes, c.MaxLineHardBytes, false)
	if len(c.AuditVerifyKeyFile) > 0 {
		keys, err := secret.AuditKeys(c.AuditVerifyKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--audit-verify-key-file: %w", err)
		}
		v := auditsig.NewVerifier(keys...)
		lineTime.Verify(v)
		entry.Verify(v)
	}
	return lineTime, entry, nil
}

// sides are the rule sets replayed: the rules, printed as they decide (or
// compared with the baseline's, the second side).
func (c *replayCmd) sides(stdout io.Writer, set, baseline *rules.Set) ([]*side, *decisionPrinter, *reportData, error) {
	engine, err := detector.New(set.Config)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("rules: %w", err)
	}
	var report *reportData
	if c.Report != "" {
		report = newReportData(c.Logs)
	}
	decided := func(d replayDecision) {
		if report != nil {
			report.decision(d)
		}
	}
	if baseline != nil {
		base, err := detector.New(baseline.Config)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", c.Baseline, err)
		}
		a := newSide(engine, func(d replayDecision) error { decided(d); return nil })
		b := newSide(base, nil)
		a.firsts, b.firsts = firsts{}, firsts{}
		return []*side{a, b}, nil, report, nil
	}
	printer := newDecisionPrinter(c.Output, stdout, c.Renewals)
	return []*side{newSide(engine, func(d replayDecision) error {
		decided(d)
		return printer.add(d)
	})}, printer, report, nil
}

// finish prints what the replay found: the end of the decisions, or the
// changes from the baseline; the review page; the summary.
func (c *replayCmd) finish(e *env, total logfile.Stats, sides []*side, printer *decisionPrinter, report *reportData) error {
	var changes []ruleChange
	if len(sides) == 2 {
		changes = compareRuns(sides[0].firsts, sides[1].firsts)
		if report != nil {
			report.compared, report.changes = true, changes
		}
	}
	if report != nil {
		if err := c.writeReport(report, sides[0].byRule); err != nil {
			return err
		}
	}
	if len(sides) == 2 {
		return c.printChanges(e.stdout, e.stderr, changes)
	}
	if err := printer.close(); err != nil {
		return err
	}
	summarize(e.stderr, total, sides[0].count, sides[0].byRule)
	return nil
}

func (c *replayCmd) writeReport(report *reportData, byRule map[string]int) error {
	f, err := os.Create(c.Report)
	if err != nil {
		return err
	}
	err = report.write(f, byRule)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("report %s: %w", c.Report, err)
	}
	return nil
}

// read streams every log through observe in time order. The same entry in
// several logs (overlapping exports, a file given twice) is one event. It
// fails when no line could be read as an audit event, naming the first
// line it could not read.
func (c *replayCmd) read(ctx context.Context, progress io.Writer, lineTime, entry *loki.Parser, observe func(*detector.Event) error) (logfile.Stats, error) {
	// A logcli line wraps the audit line in JSON: escaping can double it.
	o := logfile.Options{Parse: logfile.JSON(lineTime, entry), MaxLine: 2*lineTime.HardLimit() + 4096, Window: c.ReorderWindow}
	if c.Sort {
		o.Window, o.MaxHeld = math.MaxInt64, math.MaxInt
	}
	if c.Format != "" {
		year := c.Year
		if year == 0 {
			year = time.Now().Year()
		}
		f, err := logfile.NewFormat(c.Format, c.TimeFormat, year)
		if err != nil {
			return logfile.Stats{}, exitcode.UsageError(err)
		}
		o.Parse = f.Parse
	}
	var inputs []logfile.Input
	for _, path := range c.Logs {
		in, err := openLog(path, progress)
		if err != nil {
			return logfile.Stats{}, err
		}
		defer in.close()
		inputs = append(inputs, in.Input)
	}
	total, err := logfile.Stream(ctx, inputs, o, observe)
	switch {
	case err != nil:
		return total, err
	case total.Lines == 0:
		return total, fmt.Errorf("no lines in %s", strings.Join(c.Logs, ", "))
	case total.Events == 0:
		return total, fmt.Errorf("none of the %d lines is an audit event (JSON lines with action and client_ip, logcli --output=jsonl, or plain text read with --format); the first: %s", total.Lines, total.FirstSkip)
	}
	return total, nil
}

// readLoki streams the span --since back from --until out of Loki through
// observe, with the daemon's client, auth and paging, oldest first.
func (c *replayCmd) readLoki(ctx context.Context, entry *loki.Parser, observe func(*detector.Event) error) (logfile.Stats, error) {
	total := logfile.Stats{Skipped: map[string]int{}}
	until := time.Now()
	if c.Until != "" {
		t, err := time.Parse(time.RFC3339Nano, c.Until)
		if err != nil {
			return total, exitcode.UsageError(fmt.Errorf("--until %q: want an RFC 3339 time such as 2026-11-22T10:00:00Z", c.Until))
		}
		until = t
	}
	if c.Since <= 0 {
		return total, exitcode.UsageError(fmt.Errorf("--since %s: want a positive span such as 7d", c.Since))
	}
	if err := c.Loki.Auth().Check(); err != nil {
		return total, err
	}
	tlsConf, err := c.Loki.TLS() // reads and checks the TLS files once
	if err != nil {
		return total, err
	}
	tail, err := lokiReader(c.LokiURL, c.LokiQuery, &c.Loki, tlsConf, entry)
	if err != nil {
		return total, exitcode.UsageError(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan detector.Event, 1024)
	var readErr error
	go func() {
		defer close(ch)
		_, readErr = tail.Read(ctx, until.Add(-c.Since), until, ch)
	}()
	var observeErr error
	for ev := range ch {
		if observeErr == nil {
			total.Lines++
			total.Events++
			if observeErr = observe(&ev); observeErr != nil {
				cancel()
			}
		}
	}
	switch {
	case observeErr != nil:
		return total, observeErr
	case readErr != nil:
		return total, fmt.Errorf("read %s: %w", c.LokiURL, readErr)
	case total.Events == 0:
		return total, fmt.Errorf("no audit events in %s from %s to %s", c.LokiURL, detector.FormatTime(until.Add(-c.Since)), detector.FormatTime(until))
	}
	return total, nil
}

// lokiReader is a Loki client for a one-off read (a backtest, a check):
// the query, tenant, credentials and TLS of the flags, no metrics kept.
func lokiReader(url, query string, f *lokiflag.Loki, tlsConf *tls.Config, p *loki.Parser) (*loki.Tail, error) {
	return loki.NewTail(loki.Config{URL: url, Query: query, Header: f.Auth().Apply, TLS: tlsConf}, p, slog.New(slog.DiscardHandler), loki.NewMetrics(prometheus.NewRegistry()))
}

// openedLog is one input opened, and how to close it.
type openedLog struct {
	logfile.Input
	close func()
}

// openLog opens one input: a file, or standard input for "-", read
// through gzip when it is compressed. A plain file can be read backward.
func openLog(path string, progress io.Writer) (openedLog, error) {
	in := openedLog{Input: logfile.Input{Name: path, R: os.Stdin}, close: func() {}}
	var f *os.File
	if path != "-" {
		var err error
		if f, err = os.Open(path); err != nil {
			return in, exitcode.UsageError(err)
		}
		in.R, in.close = withProgress(f, path, progress), func() { f.Close() }
	}
	br := bufio.NewReaderSize(in.R, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			in.close()
			return in, fmt.Errorf("%s: %w", path, err)
		}
		in.R = zr
		return in, nil
	}
	in.R = br
	if f != nil {
		// Read backward in place only what can be: a regular file, not
		// a named pipe or a device.
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			in.File = f
		}
	}
	return in, nil
}

// summarize tells what was read, skipped and decided.
func summarize(w io.Writer, total logfile.Stats, decisions int, byRule map[string]int) {
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
		total.Lines, total.Events, total.Lines-total.Events, strings.Join(skipped, ", "), decisions, strings.Join(rules, ", "))
}

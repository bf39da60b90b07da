package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authguard/authguard/cmd/internal/exitcode"
	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/detector"
)

// incidentID is an evidence stream entry ID, which is what names an
// incident.
var incidentID = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

type incidentsListCmd struct {
	redisflag.Flags `embed:""`
	outputFlag
	Rule     string        `help:"Only incidents of this rule." placeholder:"NAME"`
	Key      string        `help:"Only incidents about this address, network or group (e.g. \"username alice\")." placeholder:"KEY"`
	Severity string        `help:"Only incidents of this severity." placeholder:"LEVEL"`
	Since    time.Duration `help:"Only incidents with a record in this span, e.g. 24h or 7d (0: any)." default:"0s"`
	Scan     int64         `help:"How many of the newest evidence records to read." default:"10000"`
}

type listedIncident struct {
	ID       string `json:"id"`
	Rule     string `json:"rule"`
	Key      string `json:"key"`
	Severity string `json:"severity,omitempty"`
	Opened   string `json:"opened"`
	Last     string `json:"last"`
	Action   string `json:"last_action"`
	Records  int    `json:"records"`
	opened   time.Time
}

func (c *incidentsListCmd) Run(ctx context.Context, e *env) error {
	if c.Scan <= 0 {
		return exitcode.UsageError(fmt.Errorf("--scan %d: want a positive number of records", c.Scan))
	}
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	sums, err := store.Incidents(ctx, c.Scan)
	if err != nil {
		return err
	}
	var rows []listedIncident
	for _, s := range sums {
		switch {
		case c.Rule != "" && s.Rule != c.Rule,
			c.Key != "" && !strings.EqualFold(s.Key, c.Key),
			c.Severity != "" && s.Severity != c.Severity,
			c.Since > 0 && time.Since(s.Last) > c.Since:
			continue
		}
		rows = append(rows, listedIncident{ID: s.ID, Rule: s.Rule, Key: s.Key, Severity: s.Severity,
			Opened: s.Opened.UTC().Format(time.RFC3339), Last: s.Last.UTC().Format(time.RFC3339), Action: s.Action, Records: s.Records, opened: s.Opened})
	}
	return list(c.outputFlag, e.stdout, rows, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "INCIDENT\tRULE\tKEY\tSEVERITY\tOPENED\tLAST ACTION\tRECORDS")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.ID, dash(r.Rule), dash(r.Key), dash(r.Severity),
				detector.FormatTime(r.opened), r.Action, r.Records)
		}
	})
}

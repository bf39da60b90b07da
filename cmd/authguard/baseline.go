package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

// Changes between two rule sets on the same events, one name each.
const (
	onlyNew      = "blocked only by the new rules"
	onlyBaseline = "blocked only by the baseline"
	earlier      = "blocked earlier"
	later        = "blocked later"
	alertGained  = "alert gained"
	alertLost    = "alert lost"
)

// ruleChange is one key whose outcome differs between the rules replayed
// and the baseline: its first block (or alert) on each side.
type ruleChange struct {
	Change   string `json:"change"`
	Rule     string `json:"rule"`
	Key      string `json:"key"`
	New      string `json:"new,omitempty"`      // time of the first block or alert with the new rules
	Baseline string `json:"baseline,omitempty"` // and with the baseline
}

// firsts is, per rule and key, the time of the first block and of the
// first alert a side decided ("" when none).
type firsts map[[2]string]*[2]string

// add notes d when it is its rule and key's first block or alert.
func (f firsts) add(d replayDecision) {
	if d.Action != "block" && d.Action != "alert" {
		return
	}
	k := [2]string{d.Rule, d.Key}
	at := f[k]
	if at == nil {
		at = &[2]string{}
		f[k] = at
	}
	i := 0
	if d.Action == "alert" {
		i = 1
	}
	if at[i] == "" {
		at[i] = d.Time // decisions come in time order
	}
}

// compareRuns lists every rule and key whose first block or alert differs
// between the new rules' decisions (a) and the baseline's (b), by rule and
// key.
func compareRuns(a, b firsts) []ruleChange {
	keys := map[[2]string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []ruleChange
	for k := range keys {
		var fa, fb [2]string
		if a[k] != nil {
			fa = *a[k]
		}
		if b[k] != nil {
			fb = *b[k]
		}
		c := ruleChange{Rule: k[0], Key: k[1], New: fa[0], Baseline: fb[0]}
		switch {
		case fa[0] != "" && fb[0] == "":
			c.Change = onlyNew
		case fa[0] == "" && fb[0] != "":
			c.Change = onlyBaseline
		case fa[0] != "" && fa[0] < fb[0]: // RFC 3339 in UTC sorts as time
			c.Change = earlier
		case fa[0] != "" && fa[0] > fb[0]:
			c.Change = later
		case fa[0] == "" && fa[1] != "" && fb[1] == "":
			c.Change, c.New = alertGained, fa[1]
		case fa[0] == "" && fa[1] == "" && fb[1] != "":
			c.Change, c.Baseline = alertLost, fb[1]
		default:
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// printChanges writes the changes, and their count per rule and kind to
// summary.
func (c *replayCmd) printChanges(w, summary io.Writer, changes []ruleChange) error {
	counts := map[[2]string]int{}
	for _, ch := range changes {
		counts[[2]string{ch.Rule, ch.Change}]++
	}
	var lines []string
	for k, n := range counts {
		lines = append(lines, fmt.Sprintf("%s: %d %s", k[0], n, k[1]))
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(summary, l)
	}
	if len(changes) == 0 {
		fmt.Fprintln(summary, "no key is decided differently")
	}
	return list(c.outputFlag, w, changes, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "CHANGE\tRULE\tKEY\tNEW\tBASELINE")
		for _, ch := range changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ch.Change, ch.Rule, dash(ch.Key), dash(ch.New), dash(ch.Baseline))
		}
	})
}

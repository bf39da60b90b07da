package main

import (
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
	switch o.Output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []T{} // [] rather than null: scripts iterate it
		}
		return enc.Encode(rows)
	case "jsonl":
		enc := json.NewEncoder(w)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	case "yaml":
		// The json names, in YAML: one vocabulary whatever the format.
		var generic []any
		b, err := json.Marshal(rows)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &generic); err != nil {
			return err
		}
		if generic == nil {
			generic = []any{}
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(generic); err != nil {
			return fmt.Errorf("yaml: %w", err)
		}
		return enc.Close()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

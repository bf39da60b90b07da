package main

import (
	"errors"
	"fmt"

	"github.com/authguard/authguard/rules"
)

type rulesCmd struct {
	Lint rulesLintCmd `cmd:"" help:"Check rules files; prints FILE:LINE:COL for each problem and exits 1 if any."`
	Test rulesTestCmd `cmd:"" help:"Run rule unit tests (YAML: events at relative times, expected decisions); exits 1 on a failure."`
}

type rulesTestCmd struct {
	Files []string `arg:"" help:"Rule test files." type:"path"`
}

func (c *rulesTestCmd) Run(e *env) error {
	failed := 0
	for _, f := range c.Files {
		results, err := rules.RunTests(f)
		if err != nil {
			fmt.Fprintln(e.stderr, err)
			failed++
			continue
		}
		for _, r := range results {
			if len(r.Failures) == 0 {
				fmt.Fprintf(e.stdout, "PASS  %s: %s\n", f, r.Name)
				continue
			}
			failed++
			fmt.Fprintf(e.stdout, "FAIL  %s: %s\n", f, r.Name)
			for _, msg := range r.Failures {
				fmt.Fprintf(e.stdout, "      %s\n", msg)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("rules test: %d failed", failed)
	}
	return nil
}

type rulesLintCmd struct {
	Files []string `arg:"" help:"Rules files." type:"path"`
}

func (c *rulesLintCmd) Run(e *env) error {
	bad := 0
	for _, f := range c.Files {
		set, err := rules.Load(f)
		if err != nil {
			fmt.Fprintln(e.stderr, err)
			bad++
			continue
		}
		fmt.Fprintf(e.stdout, "%s: %d rules OK\n", f, len(set.Config.Rules))
	}
	if bad > 0 {
		return errors.New("rules lint: problems found")
	}
	return nil
}

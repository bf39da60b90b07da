package main

import (
	"errors"
	"fmt"

	"github.com/authguard/authguard/rules"
)

type rulesCmd struct {
	Lint rulesLintCmd `cmd:"" help:"Check rules files; prints FILE:LINE:COL for each problem and exits 1 if any."`
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

package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/authguard/authguard/cmd/internal/buildinfo"
	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/exitcode"
	"github.com/authguard/authguard/detector/loki"
)

// cli is the command line; every flag can also be set in the --config file
// and through an AUTHGUARD_* environment variable.
type cli struct {
	Config  kong.ConfigFlag  `help:"YAML settings file; its keys are the flag names (nested keys join with -)." placeholder:"FILE"`
	Version kong.VersionFlag `short:"v" env:"-" help:"Print the version and exit."`

	Run       runCmd       `cmd:"" help:"Run the daemon: tail Loki, detect, block in Redis, page in Slack."`
	Replay    replayCmd    `cmd:"" help:"Run the rules over log files offline and print the decisions."`
	Rules     rulesCmd     `cmd:"" help:"Work with rules files."`
	Blocks    blocksCmd    `cmd:"" help:"List, add and remove blocks in Redis."`
	Accounts  accountsCmd  `cmd:"" help:"List and lift account protections."`
	Incidents incidentsCmd `cmd:"" help:"Incident reports from the evidence records."`
	Versions  versionCmd   `cmd:"" name:"version" help:"Print the version and build information."`
}

// env carries the process's outputs to commands.
type env struct {
	stdout, stderr io.Writer
	sources        *cliconfig.Sources // which settings the --config file gave
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	exited := false
	parser, err := newParser(ctx, &c, stdout, stderr, func(int) { exited = true })
	if err != nil {
		return err
	}
	kctx, err := parser.Parse(args)
	if exited {
		return nil // --help or --version was shown
	}
	if err != nil {
		return exitcode.UsageError(cliconfig.NameEnv(err))
	}
	return kctx.Run()
}

func newParser(ctx context.Context, c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	src := &cliconfig.Sources{}
	return kong.New(c,
		kong.Name("authguard"),
		kong.Description("authguard stops password guessing while it happens."),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.Configuration(cliconfig.Loader("run", src)),
		cliconfig.Durations,
		kong.DefaultEnvars("AUTHGUARD"),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&env{stdout: stdout, stderr: stderr, sources: src}),
		kong.Vars{"loki_query": loki.DefaultQuery, "audit_fields": strings.Join(loki.DefaultAttrs, ","), "version": buildinfo.String("authguard")},
	)
}

type versionCmd struct{}

func (versionCmd) Run(e *env) error {
	fmt.Fprintln(e.stdout, buildinfo.String("authguard"))
	return nil
}

package cliconfig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/authguard/authguard/cmd/internal/exitcode"
)

// app is a program shaped like authguard: a daemon command whose settings
// the top level holds, and others with settings of their own.
type app struct {
	Config kong.ConfigFlag
	Run    struct {
		LokiURL     string
		Listen      string `default:":9090"`
		Backfill    time.Duration
		CheckConfig Check
	} `cmd:""`
	Replay struct {
		LokiURL string
		Output  string `enum:"table,json" default:"table"`
	} `cmd:""`
	Blocks struct {
		List struct {
			Output string `enum:"table,json" default:"table"`
		} `cmd:""`
		Add struct {
			TTL time.Duration `name:"ttl" default:"1h"`
		} `cmd:""`
	} `cmd:""`
}

func parse(t *testing.T, file string, args ...string) (*app, *kong.Context, *Sources, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "settings.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	var a app
	src := &Sources{}
	p, err := kong.New(&a, kong.Name("app"), kong.Configuration(Loader("run", src)), Durations, kong.DefaultEnvars("TESTAPP"), kong.Exit(func(int) {}))
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := p.Parse(append([]string{"--config", path}, args...))
	if err != nil { // as the binaries report it, the file named plainly
		err = errors.New(strings.ReplaceAll(NameEnv(err).Error(), path, "settings.yaml"))
	}
	return &a, kctx, src, err
}

func TestTheTopLevelHoldsTheDaemonsSettingsAndSectionsTheirCommands(t *testing.T) {
	file := "loki:\n  url: http://loki:3100\nlisten: :1\nbackfill: 2d\nreplay:\n  output: json\nblocks:\n  ttl: 2h\n"
	a, _, _, err := parse(t, file, "run")
	if err != nil {
		t.Fatal(err)
	}
	if a.Run.LokiURL != "http://loki:3100" || a.Run.Listen != ":1" || a.Run.Backfill != 48*time.Hour {
		t.Errorf("run: %+v", a.Run)
	}
	// The daemon's keys do not trouble another command, which takes the
	// top level's settings it shares and its own section's.
	if a, _, _, err = parse(t, file, "replay"); err != nil || a.Replay.Output != "json" || a.Replay.LokiURL != "http://loki:3100" {
		t.Errorf("replay: %+v %v", a.Replay, err)
	}
	// A section reaches the commands under it, and only those.
	if a, _, _, err = parse(t, file, "blocks", "add"); err != nil || a.Blocks.Add.TTL != 2*time.Hour {
		t.Errorf("blocks add: %+v %v", a.Blocks.Add, err)
	}
	if a, _, _, err = parse(t, file, "blocks", "list"); err != nil || a.Blocks.List.Output != "table" {
		t.Errorf("blocks list took replay's output: %+v %v", a.Blocks.List, err)
	}
}

func TestMisplacedAndBadSettingsNameTheirPosition(t *testing.T) {
	for _, c := range []struct{ name, file, want string }{
		{"another command's key at the top", "listen: :1\noutput: json\n",
			`settings.yaml:2:1: "output" is not a setting of app run but of app replay, app blocks list: put it under replay: or blocks: to set it there`},
		{"a key no command has", "loki-urll: x\n", `settings.yaml:1:1: unknown setting "loki-urll"`},
		{"a key its section's command lacks", "replay:\n  listen: :1\n", `settings.yaml:2:3: unknown setting "listen" for app replay`},
		{"a value the flag refuses", "replay:\n  output: jsn\n", `settings.yaml:2:3: "jsn" is not one of table, json`},
		{"a bad duration", "backfill: soon\n", `settings.yaml:1:1: bad duration "soon"`},
		{"a key twice", "listen: :1\nlisten: :2\n", `settings.yaml:2:1: setting "listen" appears twice`},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"run"}
			if strings.Contains(c.file, "replay:") {
				args = []string{"replay"}
			}
			if _, _, _, err := parse(t, c.file, args...); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v\nwant %s", err, c.want)
			}
		})
	}
}

func TestOriginsSayWhereEachSettingCameFrom(t *testing.T) {
	t.Setenv("TESTAPP_LISTEN", ":7")
	_, kctx, src, err := parse(t, "loki:\n  url: http://u:pw@loki:3100\nlisten: :1\nbackfill: 1h\n", "run", "--backfill", "3h", "--check-config=online")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range src.Origins(kctx) {
		got[o.Flag+"="+o.Value] = o.From
	}
	want := map[string]string{
		"--loki-url=http://u:xxxxx@loki:3100": "settings.yaml:2:3", // the password is not shown
		"--listen=:7":                         "env TESTAPP_LISTEN",
		"--backfill=3h0m0s":                   "flag",
		"--check-config=online":               "flag",
	}
	if len(got) != len(want) {
		t.Errorf("origins %v, want %v", got, want)
	}
	for k, v := range want {
		if !strings.HasSuffix(got[k], v) {
			t.Errorf("%s from %q, want %q", k, got[k], v)
		}
	}
}

func TestCheckConfigTakesOnlineOrStandsAlone(t *testing.T) {
	for arg, want := range map[string]Check{"--check-config": "offline", "--check-config=online": "online", "--check-config=offline": "offline", "--check-config=false": ""} {
		if a, _, _, err := parse(t, "", "run", arg); err != nil || a.Run.CheckConfig != want {
			t.Errorf("%s: %q %v, want %q", arg, a.Run.CheckConfig, err, want)
		}
	}
	if _, _, _, err := parse(t, "", "run", "--check-config=onlin"); err == nil {
		t.Error("--check-config=onlin taken")
	}
}

func TestReachRunsEveryProbeAndTellsUnreachableFromRefused(t *testing.T) {
	var out bytes.Buffer
	ran := 0
	refused := func(context.Context) (string, error) { ran++; return "", fmt.Errorf("dial: %w", syscall.ECONNREFUSED) }
	denied := func(context.Context) (string, error) { ran++; return "", errors.New("invalid_auth") }
	answers := func(ctx context.Context) (string, error) {
		ran++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a probe without a deadline")
		}
		return "answers", nil
	}
	err := Reach(context.Background(), &out, []Probe{{"redis", refused}, {"slack", denied}, {"loki", answers}})
	if ran != 3 || exitcode.Of(err) != exitcode.Unreachable || !strings.Contains(out.String(), "redis      FAILED: dial: connection refused") ||
		!strings.Contains(out.String(), "loki       ok: answers") {
		t.Errorf("ran %d, err %v (status %d)\n%s", ran, err, exitcode.Of(err), out.String())
	}
	// Reached, but refused: a failed check (1), not an unreachable backend.
	out.Reset()
	if err := Reach(context.Background(), &out, []Probe{{"slack", denied}, {"loki", answers}}); exitcode.Of(err) != exitcode.Findings {
		t.Errorf("a refused token: status %d, want 1\n%s", exitcode.Of(err), out.String())
	}
}

// A value out of a flag's choices names the environment variable it came
// from, as a bad value from the file names its position.
func TestABadValueNamesTheVariableItCameFrom(t *testing.T) {
	t.Setenv("TESTAPP_OUTPUT", "xml")
	_, _, _, err := parse(t, "", "replay")
	if err == nil || !strings.HasSuffix(err.Error(), `(from envar TESTAPP_OUTPUT="xml")`) {
		t.Errorf("from the environment: %v", err)
	}
	_, _, _, err = parse(t, "", "replay", "--output", "yaml")
	if err == nil || strings.Contains(err.Error(), "envar") {
		t.Errorf("given on the command line: %v", err)
	}
}

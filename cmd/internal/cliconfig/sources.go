package cliconfig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/authguard/authguard/cmd/internal/exitcode"
)

// Sources learns, during a parse, which settings the file gave and where.
type Sources struct {
	file map[string]Position
}

func (s *Sources) record(flag string, at Position) {
	if s == nil {
		return
	}
	if s.file == nil {
		s.file = map[string]Position{}
	}
	s.file[flag] = at
}

// Origin is one setting that is not at its default, and where it came from:
// "flag", "env NAME" or the file's FILE:LINE:COL.
type Origin struct {
	Flag, Value, From string
}

// Origins lists the settings of the parsed command that are not at their
// default, in the order help shows them. URLs are shown without their
// passwords.
func (s *Sources) Origins(kctx *kong.Context) []Origin {
	var out []Origin
	for _, f := range kctx.Flags() {
		if f.Hidden || reserved(f.Name) {
			continue
		}
		from := ""
		if env, _, ok := envOf(f); ok {
			from = "env " + env
		}
		switch {
		case given(kctx, f):
			from = "flag"
		case s != nil && s.file[f.Name] != Position{}:
			from = s.file[f.Name].String()
		}
		if from == "" {
			continue
		}
		out = append(out, Origin{Flag: "--" + f.Name, Value: show(kctx.FlagValue(f)), From: from})
	}
	return out
}

// PrintOrigins writes the origins, one a line, under a heading.
func PrintOrigins(w io.Writer, origins []Origin) {
	if len(origins) == 0 {
		fmt.Fprintln(w, "settings: all defaults")
		return
	}
	fmt.Fprintln(w, "settings (not at their default):")
	width := 0
	for _, o := range origins {
		width = max(width, len(o.Flag)+1+len(o.Value))
	}
	for _, o := range origins {
		fmt.Fprintf(w, "  %-*s  from %s\n", width, o.Flag+"="+o.Value, o.From)
	}
}

// show renders a setting's value as it would be written on the command line.
func show(v any) string {
	switch x := v.(type) {
	case string:
		return redact(x)
	case map[string]string:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + x[k]
		}
		return strings.Join(keys, ";")
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice {
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(rv.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

// Check is --check-config: empty when not asked for, "offline" to check
// the settings and files, "online" to reach each backend as well. Given
// bare, --check-config is offline.
type Check string

// Online says whether the backends are to be reached.
func (c Check) Online() bool { return c == "online" }

// Decode takes --check-config, --check-config=online and
// --check-config=offline (true and false also, as a bool flag).
func (c *Check) Decode(ctx *kong.DecodeContext) error {
	if ctx.Scan.Peek().Type != kong.FlagValueToken {
		*c = "offline"
		return nil
	}
	t, err := ctx.Scan.PopValue("offline|online")
	if err != nil {
		return err
	}
	switch v := fmt.Sprint(t.Value); v {
	case "true", "offline":
		*c = "offline"
	case "false", "":
		*c = ""
	case "online":
		*c = "online"
	default:
		return fmt.Errorf("want offline or online, not %q", v)
	}
	return nil
}

// IsBool lets the flag stand alone.
func (Check) IsBool() bool { return true }

// Probe is one backend --check-config=online reaches: Run asks it
// something it answers only when it is reachable and takes the
// credentials, and says what it answered.
type Probe struct {
	Name string
	Run  func(context.Context) (string, error)
}

// ProbeTimeout bounds each probe.
const ProbeTimeout = 5 * time.Second

// Reach runs the probes one after the other, each within ProbeTimeout, and
// prints a line for each. When one failed, the error exits 3 if a backend
// could not be reached, else 1 (one answered, but not as it should: a
// refused credential, a bad query).
func Reach(ctx context.Context, w io.Writer, probes []Probe) error {
	fmt.Fprintln(w, "reaching the backends (--check-config=online):")
	var failed []string
	code := exitcode.OK
	for _, p := range probes {
		pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
		ok, err := p.Run(pctx)
		cancel()
		if err != nil {
			fmt.Fprintf(w, "  %-10s FAILED: %v\n", p.Name, err)
			failed = append(failed, p.Name)
			code = max(code, exitcode.Of(err))
			continue
		}
		fmt.Fprintf(w, "  %-10s ok: %s\n", p.Name, ok)
	}
	if len(failed) > 0 {
		return &exitcode.Error{Code: code, Err: fmt.Errorf("failed: %s", strings.Join(failed, ", "))}
	}
	return nil
}

// URL checks a URL setting: one of schemes and a host, else a usage error
// that shows example. A host:port without a scheme parses as a URL of
// scheme "host" with no host at all, and would fail only when first used.
func URL(flag, raw, example string, schemes ...string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return nil, exitcode.UsageError(fmt.Errorf("%s %q: want a URL such as %s", flag, redact(raw), example))
	}
	return u, nil
}

// redact hides a URL's password.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	return raw
}

// NameEnv adds to a parse error about a flag's value the environment
// variable that value came from: kong names it for values it cannot
// decode, not for those outside a flag's choices.
func NameEnv(err error) error {
	var pe *kong.ParseError
	if !errors.As(err, &pe) || pe.Context == nil {
		return err
	}
	for _, f := range pe.Context.Flags() {
		if !strings.HasPrefix(err.Error(), "--"+f.Name+" must be one of") || given(pe.Context, f) {
			continue
		}
		if env, v, ok := envOf(f); ok {
			return fmt.Errorf("%w (from envar %s=%q)", err, env, v)
		}
	}
	return err
}

// envOf is the environment variable that sets the flag, and its value.
func envOf(f *kong.Flag) (name, value string, ok bool) {
	for _, env := range f.Envs {
		if v, ok := os.LookupEnv(env); ok {
			return env, v, true
		}
	}
	return "", "", false
}

// reserved says the name is kong's own flag, never a setting.
func reserved(name string) bool { return name == "config" || name == "help" || name == "version" }

// given says whether the flag was on the command line.
func given(kctx *kong.Context, f *kong.Flag) bool {
	for _, p := range kctx.Path {
		if p.Flag == f && !p.Resolved {
			return true
		}
	}
	return false
}

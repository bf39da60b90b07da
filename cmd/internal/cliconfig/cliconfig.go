// Package cliconfig lets both authguard binaries read their settings from one
// YAML file whose keys are the command-line flags: nested mappings join with
// "-" (loki: {url: ...} is --loki-url). Unknown keys are errors naming
// FILE:LINE:COL. Precedence: flags, then environment variables, then the
// file, then defaults.
package cliconfig

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/authguard/authguard/responder/duration"
	"gopkg.in/yaml.v3"
)

type entry struct {
	value     any
	line, col int
	key       string
}

type resolver struct {
	file    string
	entries map[string]entry
}

// Durations has every time.Duration setting, flag, environment variable
// or file key, read as rules write durations: 90s, 5m, 24h and also whole
// days (7d).
var Durations = kong.TypeMapper(reflect.TypeFor[time.Duration](), kong.MapperFunc(func(ctx *kong.DecodeContext, target reflect.Value) error {
	t, err := ctx.Scan.PopValue("duration")
	if err != nil {
		return err
	}
	s, ok := t.Value.(string)
	if !ok {
		return fmt.Errorf("want a duration such as 30s, 5m, 24h or 7d, not %v", t.Value)
	}
	d, err := duration.Parse(s)
	if err != nil {
		return err
	}
	target.SetInt(int64(d))
	return nil
}))

// Loader is a kong.ConfigurationLoader for the strict YAML format.
func Loader(r io.Reader) (kong.Resolver, error) {
	name := "config"
	if f, ok := r.(*os.File); ok {
		name = f.Name()
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	res := &resolver{file: name, entries: map[string]entry{}}
	if len(root.Content) == 0 {
		return res, nil
	}
	if err := res.walk(root.Content[0], ""); err != nil {
		return nil, err
	}
	return res, nil
}

func (r *resolver) errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d:%d: %s", r.file, n.Line, n.Column, fmt.Sprintf(format, args...))
}

func (r *resolver) walk(n *yaml.Node, prefix string) error {
	if n.Kind != yaml.MappingNode {
		return r.errorf(n, "expected a mapping of settings")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := prefix + strings.ReplaceAll(k.Value, "_", "-")
		if _, dup := r.entries[name]; dup {
			return r.errorf(k, "setting %q appears twice", name)
		}
		switch v.Kind {
		case yaml.MappingNode:
			if err := r.walk(v, name+"-"); err != nil {
				return err
			}
		case yaml.SequenceNode:
			items := make([]string, 0, len(v.Content))
			for _, c := range v.Content {
				if c.Kind != yaml.ScalarNode {
					return r.errorf(c, "%s: expected a list of values", name)
				}
				items = append(items, c.Value)
			}
			r.entries[name] = entry{strings.Join(items, ","), k.Line, k.Column, k.Value}
		case yaml.ScalarNode:
			r.entries[name] = entry{v.Value, k.Line, k.Column, k.Value}
		default:
			return r.errorf(v, "%s: unsupported value", name)
		}
	}
	return nil
}

// Validate reports keys that name no flag.
func (r *resolver) Validate(app *kong.Application) error {
	known := map[string]bool{}
	var visit func(n *kong.Node)
	visit = func(n *kong.Node) {
		for _, f := range n.Flags {
			known[f.Name] = true
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(app.Node)
	names := make([]string, 0, len(r.entries))
	for name := range r.entries {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := r.entries[names[i]], r.entries[names[j]]
		return a.line < b.line || a.line == b.line && a.col < b.col
	})
	for _, name := range names {
		if !known[name] || name == "config" || name == "help" {
			e := r.entries[name]
			return fmt.Errorf("%s:%d:%d: unknown setting %q", r.file, e.line, e.col, e.key)
		}
	}
	return nil
}

// Resolve returns the file's value for flag, unless an environment variable
// for it is set (the environment overrides the file).
func (r *resolver) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	for _, env := range flag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return nil, nil
		}
	}
	e, ok := r.entries[flag.Name]
	if !ok {
		return nil, nil
	}
	return e.value, nil
}

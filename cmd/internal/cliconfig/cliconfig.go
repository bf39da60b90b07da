// Package cliconfig lets both authguard binaries read their settings from one
// YAML file whose keys are the command-line flags: nested mappings join with
// "-" (loki: {url: ...} is --loki-url). The top level holds the settings of
// the home command (authguard's run, the gateway's only one) and of the
// command being run; a mapping under a command's name (replay:, blocks:)
// holds that command's own and wins over the top level. Unknown and
// misplaced keys, and values a flag refuses, are errors naming
// FILE:LINE:COL. Precedence: flags, then environment variables, then the
// file, then defaults; Sources says which one each setting came from.
package cliconfig

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/authguard/authguard/responder/duration"
	"gopkg.in/yaml.v3"
)

// Position is where a value sits in the settings file.
type Position struct {
	File      string
	Line, Col int
}

func (p Position) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

type entry struct {
	value any
	at    Position
	key   string // as written
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

// Loader returns the kong.ConfigurationLoader of the strict YAML format.
// home names the command whose settings the top level holds besides the
// command being run ("" when the program has no commands); src, when not
// nil, learns which settings the file gave and from where.
func Loader(home string, src *Sources) kong.ConfigurationLoader {
	return func(r io.Reader) (kong.Resolver, error) {
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
		return &resolver{file: name, root: &root, home: home, src: src}, nil
	}
}

// resolver answers kong from the file. Its scopes are built on first use,
// when the command tree is known: scopes[app.Node] is the top level, and a
// command's node has the keys of its section.
type resolver struct {
	file   string
	root   *yaml.Node
	home   string
	src    *Sources
	scopes map[*kong.Node]map[string]entry
	err    error         // from building the scopes
	kctx   *kong.Context // the parse under way
	app    *kong.Node    // the program's root node
}

func (r *resolver) errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d:%d: %s", r.file, n.Line, n.Column, fmt.Sprintf(format, args...))
}

func (r *resolver) prepare(app *kong.Node) {
	if r.scopes != nil {
		return
	}
	r.app = app
	r.scopes = map[*kong.Node]map[string]entry{}
	if len(r.root.Content) == 0 {
		return
	}
	r.err = r.walk(r.root.Content[0], app, "")
}

func (r *resolver) walk(n *yaml.Node, cmd *kong.Node, prefix string) error {
	if n.Kind != yaml.MappingNode {
		return r.errorf(n, "expected a mapping of settings")
	}
	scope := r.scopes[cmd]
	if scope == nil {
		scope = map[string]entry{}
		r.scopes[cmd] = scope
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if sub := child(cmd, k.Value); prefix == "" && sub != nil && v.Kind == yaml.MappingNode {
			if _, dup := r.scopes[sub]; dup {
				return r.errorf(k, "section %q appears twice", k.Value)
			}
			if err := r.walk(v, sub, ""); err != nil {
				return err
			}
			continue
		}
		name := prefix + strings.ReplaceAll(k.Value, "_", "-")
		if _, dup := scope[name]; dup {
			return r.errorf(k, "setting %q appears twice", name)
		}
		at := Position{r.file, k.Line, k.Column}
		switch v.Kind {
		case yaml.MappingNode:
			if err := r.walk(v, cmd, name+"-"); err != nil {
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
			scope[name] = entry{strings.Join(items, ","), at, k.Value}
		case yaml.ScalarNode:
			scope[name] = entry{v.Value, at, k.Value}
		default:
			return r.errorf(v, "%s: unsupported value", name)
		}
	}
	return nil
}

// child is cmd's command named name, or nil.
func child(cmd *kong.Node, name string) *kong.Node {
	for _, c := range cmd.Children {
		if c.Type == kong.CommandNode && (c.Name == name || slices.Contains(c.Aliases, name)) {
			return c
		}
	}
	return nil
}

// selected is the command being run (the root when there is none).
func (r *resolver) selected() *kong.Node {
	if r.kctx != nil {
		if n := r.kctx.Selected(); n != nil {
			return n
		}
	}
	return r.app
}

// Resolve returns the file's value for flag from the most specific scope
// on the path of the command being run, unless an environment variable
// for it is set (the environment overrides the file). The value is
// decoded once here, so a bad one is reported with its position.
func (r *resolver) Resolve(kctx *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	r.kctx = kctx
	r.prepare(kctx.Model.Node)
	if r.err != nil {
		return nil, nil // Validate reports it
	}
	if _, _, ok := envOf(flag); ok {
		return nil, nil
	}
	for n := r.selected(); n != nil; n = n.Parent {
		e, ok := r.scopes[n][flag.Name]
		if !ok {
			continue
		}
		if err := decodes(flag, e.value); err != nil {
			return nil, fmt.Errorf("%s: %w", e.at, err)
		}
		r.src.record(flag.Name, e.at)
		return e.value, nil
	}
	return nil, nil
}

// decodes says whether flag takes v, enums included.
func decodes(flag *kong.Flag, v any) error {
	target := reflect.New(flag.Target.Type()).Elem()
	scan := kong.ScanFromTokens(kong.Token{Type: kong.FlagValueToken, Value: v})
	if err := flag.Mapper.Decode(&kong.DecodeContext{Value: flag.Value, Scan: scan}, target); err != nil {
		return err
	}
	if flag.Enum == "" {
		return nil
	}
	values := []reflect.Value{target}
	if target.Kind() == reflect.Slice {
		values = values[:0]
		for i := range target.Len() {
			values = append(values, target.Index(i))
		}
	}
	for _, x := range values {
		if s := fmt.Sprint(x.Interface()); !slices.Contains(flag.EnumSlice(), s) {
			return fmt.Errorf("%q is not one of %s", s, strings.Join(flag.EnumSlice(), ", "))
		}
	}
	return nil
}

// Validate reports the file's first misplaced or unknown key, in the
// file's order.
func (r *resolver) Validate(app *kong.Application) error {
	r.prepare(app.Node)
	if r.err != nil {
		return r.err
	}
	type keyed struct {
		e     entry
		name  string
		scope *kong.Node
	}
	var all []keyed
	for scope, entries := range r.scopes {
		for name, e := range entries {
			all = append(all, keyed{e, name, scope})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i].e.at, all[j].e.at
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	for _, k := range all {
		if err := r.placed(k.scope, k.name, k.e); err != nil {
			return err
		}
	}
	return nil
}

// placed says whether the key name may sit in scope: a section takes the
// settings of its command and the commands under it; the top level those
// of the command being run and of the home command.
func (r *resolver) placed(scope *kong.Node, name string, e entry) error {
	if scope != r.app {
		if !reserved(name) && len(commandsWith(scope, name)) > 0 {
			return nil
		}
		return fmt.Errorf("%s: unknown setting %q for %s", e.at, e.key, scope.FullPath())
	}
	if reserved(name) {
		return fmt.Errorf("%s: unknown setting %q", e.at, e.key)
	}
	for n := r.selected(); n != nil; n = n.Parent {
		if hasFlag(n, name) {
			return nil
		}
	}
	if home := child(r.app, r.home); home != nil && hasFlag(home, name) {
		return nil
	}
	owners := commandsWith(r.app, name)
	if len(owners) == 0 {
		return fmt.Errorf("%s: unknown setting %q", e.at, e.key)
	}
	var paths, sections []string
	for _, o := range owners {
		paths = append(paths, o.FullPath())
		top := o
		for top.Parent != r.app {
			top = top.Parent
		}
		if s := top.Name + ":"; !slices.Contains(sections, s) {
			sections = append(sections, s)
		}
	}
	return fmt.Errorf("%s: %q is not a setting of %s but of %s: put it under %s to set it there",
		e.at, e.key, r.selected().FullPath(), strings.Join(paths, ", "), strings.Join(sections, " or "))
}

func hasFlag(n *kong.Node, name string) bool {
	return slices.ContainsFunc(n.Flags, func(f *kong.Flag) bool { return f.Name == name })
}

// commandsWith lists the commands at or under n that have the flag name.
func commandsWith(n *kong.Node, name string) []*kong.Node {
	var found []*kong.Node
	if n.Type == kong.CommandNode && hasFlag(n, name) {
		found = append(found, n)
	}
	for _, c := range n.Children {
		found = append(found, commandsWith(c, name)...)
	}
	return found
}

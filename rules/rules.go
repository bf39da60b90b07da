// Package rules reads authguard's YAML detection rules, strictly: an unknown
// field, a value of the wrong type or an invalid setting is reported as
// FILE:LINE:COL: message, and nothing half-valid is ever compiled.
package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/cidr"
	"github.com/authguard/authguard/responder/duration"
)

// File is the rules file as written by an operator.
type File struct {
	Rules    []Rule     `yaml:"rules"`
	Severity []Severity `yaml:"severity"`
	Allow    []Prefix   `yaml:"allow"`
	// MaxTrackedKeys caps the keys each rule tracks (memory bound).
	MaxTrackedKeys int `yaml:"max_tracked_keys"`
	// OutOfOrderTolerance is how late an event may arrive and still count.
	OutOfOrderTolerance Duration `yaml:"out_of_order_tolerance"`
	// Takeover turns compromise detection on: a login that works from an
	// address that is or was lately guessing is a P1 possible takeover.
	Takeover *Takeover `yaml:"takeover"`
}

// Takeover configures compromise detection.
type Takeover struct {
	// Memory is how long after a block a login from its address is
	// suspect (default 24h).
	Memory Duration `yaml:"memory"`
}

// TakeoverRule is the rule name of possible-takeover decisions.
const TakeoverRule = "possible-account-takeover"

// Rule is one detection rule.
type Rule struct {
	Name       string `yaml:"name"`
	Match      Match  `yaml:"match"`
	GroupBy    string `yaml:"group_by"`
	IPv4Prefix int    `yaml:"ipv4_prefix"`
	IPv6Prefix int    `yaml:"ipv6_prefix"`
	Distinct   string `yaml:"distinct"`
	// MinSuccessRatio: with distinct, the share of those accounts whose
	// latest attempt succeeded must reach this (credential stuffing).
	MinSuccessRatio float64  `yaml:"min_success_ratio"`
	Window          Duration `yaml:"window"`
	Threshold       int      `yaml:"threshold"`
	Block           *Block   `yaml:"block"`
	Protect         *Protect `yaml:"protect"`
	Alert           bool     `yaml:"alert"`
	// DryRun records and pages but writes no block.
	DryRun bool `yaml:"dry_run"`
}

// Match selects the events a rule counts.
type Match struct {
	Action string `yaml:"action"`
}

// Block says how long a rule blocks the key it fires for.
type Block struct {
	TTL      Duration  `yaml:"ttl"`
	Escalate *Escalate `yaml:"escalate"`
	// Scope is what a rule grouped by a field other than client_ip
	// blocks: "sources", the addresses whose events are in the window.
	Scope string `yaml:"scope"`
}

// Protect protects the account a rule grouped by username fires for:
// gateways refuse logins to it except from addresses that logged into it
// before.
type Protect struct {
	TTL Duration `yaml:"ttl"`
}

// Escalate lengthens the blocks of repeat offenders: TTL × factor^(n-1) for
// the n-th block within remember, at most max.
type Escalate struct {
	Factor   float64  `yaml:"factor"`
	Max      Duration `yaml:"max"`
	Remember Duration `yaml:"remember"`
}

// Severity maps an attempt rate (attempts per minute) to a level.
type Severity struct {
	Level string  `yaml:"level"`
	Above float64 `yaml:"above"`
}

// Set is a compiled, valid rules file.
type Set struct {
	// Config is ready for detector.New.
	Config detector.Config
	// MaxWindow is the longest rule window, for backfill.
	MaxWindow time.Duration
}

// Error is one problem in a rules file, with its position.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e Error) Error() string { return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg) }

// Errors is every problem found in one file.
type Errors []Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads and compiles the rules file at path.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return Parse(path, data)
}

// Parse compiles a rules file; name is used in error positions.
func Parse(name string, data []byte) (*Set, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(name, err)}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, Errors{{name, 1, 1, "empty rules file: want a mapping with a rules list"}}
	}
	doc := root.Content[0]
	p := &parser{file: name}
	p.check(doc, reflect.TypeOf(File{}))
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	var f File
	if err := doc.Decode(&f); err != nil {
		var pe Error
		if errors.As(err, &pe) {
			pe.File = name
			return nil, Errors{pe}
		}
		return nil, Errors{syntaxError(name, err)}
	}
	set := p.compile(doc, &f)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return set, nil
}

type parser struct {
	file string
	errs Errors
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, Error{p.file, n.Line, n.Column, fmt.Sprintf(format, args...)})
}

// check walks node against the Go type it will be decoded into and reports
// unknown fields and scalars of the wrong type with their positions.
func (p *parser) check(n *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()) {
		return // the type checks itself
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			p.errorf(n, "expected a mapping, got %s", describe(n))
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			fields[strings.Split(f.Tag.Get("yaml"), ",")[0]] = f.Type
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			switch {
			case !ok:
				p.errorf(k, "unknown field %q", k.Value)
			case seen[k.Value]:
				p.errorf(k, "field %q appears twice", k.Value)
			default:
				p.check(v, ft)
			}
			seen[k.Value] = true
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.errorf(n, "expected a list, got %s", describe(n))
			return
		}
		for _, c := range n.Content {
			p.check(c, t.Elem())
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			p.errorf(n, "expected a whole number, got %s", describe(n))
		}
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
			p.errorf(n, "expected a number, got %s", describe(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			p.errorf(n, "expected true or false, got %s", describe(n))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			p.errorf(n, "expected a string, got %s", describe(n))
		}
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// field returns the value node of key in mapping n, or n itself when absent
// so that errors about a missing field point at the enclosing mapping.
func field(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return n
}

func (p *parser) compile(doc *yaml.Node, f *File) *Set {
	set := &Set{}
	cfg := &set.Config
	cfg.MaxKeys = f.MaxTrackedKeys
	cfg.Tolerance = time.Duration(f.OutOfOrderTolerance)
	if f.MaxTrackedKeys < 0 || f.MaxTrackedKeys > detector.MaxKeysLimit {
		p.errorf(field(doc, "max_tracked_keys"), "max_tracked_keys %d: want 0 (the default, %d) to %d", f.MaxTrackedKeys, detector.DefaultMaxKeys, detector.MaxKeysLimit)
	}
	rulesNode := field(doc, "rules")
	if len(f.Rules) == 0 {
		p.errorf(rulesNode, "no rules: want at least one entry under rules")
	}
	names := map[string]bool{}
	for i, r := range f.Rules {
		n := rulesNode.Content[i]
		switch {
		case r.Name == "":
			p.errorf(n, "rule without a name")
		case names[r.Name]:
			p.errorf(field(n, "name"), "duplicate rule name %q", r.Name)
		}
		names[r.Name] = true
		d := p.rule(n, r)
		set.MaxWindow = max(set.MaxWindow, d.Window)
		cfg.Rules = append(cfg.Rules, d)
	}
	cfg.Severity = p.severity(field(doc, "severity"), f.Severity)
	if f.Takeover != nil {
		cfg.Takeover = detector.Takeover{Name: TakeoverRule, Memory: time.Duration(f.Takeover.Memory)}
		if cfg.Takeover.Memory == 0 {
			cfg.Takeover.Memory = 24 * time.Hour
		}
		if names[TakeoverRule] {
			p.errorf(field(doc, "takeover"), "a rule is named %s, the name of takeover decisions: rename it", TakeoverRule)
		}
	}
	for _, a := range f.Allow {
		cfg.Allow = append(cfg.Allow, netip.Prefix(a))
	}
	return set
}

// rule checks one rule (at n) and compiles it.
func (p *parser) rule(n *yaml.Node, r Rule) detector.Rule {
	d := detector.Rule{Name: r.Name, Match: r.Match.Action, Window: time.Duration(r.Window), Distinct: r.Distinct, MinSuccessRatio: r.MinSuccessRatio,
		Threshold: r.Threshold, Alert: r.Alert, IPv4Prefix: r.IPv4Prefix, IPv6Prefix: r.IPv6Prefix, DryRun: r.DryRun}
	switch r.GroupBy {
	case "client_ip":
		d.PerIP = true
	case "", "none":
	default:
		if !isFieldName(r.GroupBy) || r.GroupBy == "action" {
			p.errorf(field(n, "group_by"), "group_by %q: want client_ip, an audit field such as username or session_id, or leave it out for a global rule", r.GroupBy)
		}
		d.GroupBy = r.GroupBy
	}
	switch {
	case r.Distinct == "":
	case !isFieldName(r.Distinct) || r.Distinct == "action":
		p.errorf(field(n, "distinct"), "distinct %q: want an audit field such as username or client_ip", r.Distinct)
	case r.Distinct == r.GroupBy:
		p.errorf(field(n, "distinct"), "distinct %q: the rule is grouped by it; count another field", r.Distinct)
	}
	if r.MinSuccessRatio != 0 && (r.Distinct == "" || r.MinSuccessRatio < 0 || r.MinSuccessRatio > 1) {
		p.errorf(field(n, "min_success_ratio"), "min_success_ratio %g: want a share from 0 to 1, with distinct: username", r.MinSuccessRatio)
	}
	if r.IPv4Prefix < 0 || r.IPv4Prefix > 32 {
		p.errorf(field(n, "ipv4_prefix"), "ipv4_prefix %d: want 1 to 32", r.IPv4Prefix)
	}
	if r.IPv6Prefix < 0 || r.IPv6Prefix > 128 {
		p.errorf(field(n, "ipv6_prefix"), "ipv6_prefix %d: want 1 to 128", r.IPv6Prefix)
	}
	if r.Window <= 0 {
		p.errorf(field(n, "window"), "window must be a positive duration such as 10m or 1d")
	}
	if r.Threshold < 1 || r.Threshold > 65535 {
		p.errorf(field(n, "threshold"), "threshold %d: want 1 to 65535", r.Threshold)
	}
	if r.Block != nil {
		p.block(field(n, "block"), r.Block, &d)
	}
	if r.Protect != nil {
		pn := field(n, "protect")
		switch {
		case d.GroupBy != "username":
			p.errorf(pn, "protect guards an account: only on a rule with group_by: username")
		case r.Protect.TTL <= 0:
			p.errorf(field(pn, "ttl"), "protect ttl must be a positive duration such as 15m")
		}
		d.Protect = time.Duration(r.Protect.TTL)
	}
	if d.BlockTTL == 0 && d.Protect == 0 && !d.Alert {
		p.errorf(n, "rule %q neither blocks nor alerts: add block or alert: true", r.Name)
	}
	return d
}

// block checks a rule's block (at bn) and sets its TTL and escalation on d.
func (p *parser) block(bn *yaml.Node, b *Block, d *detector.Rule) {
	switch {
	case b.TTL <= 0:
		p.errorf(field(bn, "ttl"), "block ttl must be a positive duration such as 5m")
	case d.GroupBy != "" && b.Scope != "sources":
		p.errorf(bn, "a rule grouped by %s blocks no %s: add scope: sources to block the addresses that contributed, or leave block out to alert only", d.GroupBy, d.GroupBy)
	case b.Scope != "" && b.Scope != "sources":
		p.errorf(field(bn, "scope"), "block scope %q: the one scope is sources", b.Scope)
	case b.Scope != "" && d.GroupBy == "":
		p.errorf(field(bn, "scope"), "block scope sources: only for a rule grouped by a field other than client_ip (this one blocks what it groups by)")
	case !d.PerIP && d.GroupBy == "":
		p.errorf(bn, "a global rule cannot block: add group_by: client_ip")
	}
	d.BlockTTL = time.Duration(b.TTL)
	d.BlockSources = b.Scope == "sources" && d.GroupBy != ""
	esc := b.Escalate
	if esc == nil {
		return
	}
	en := field(bn, "escalate")
	if esc.Factor < 1 {
		p.errorf(field(en, "factor"), "escalate factor %g: want 1 or more", esc.Factor)
	}
	if esc.Max > 0 && esc.Max < b.TTL {
		p.errorf(field(en, "max"), "escalate max is shorter than the block ttl")
	}
	remember := time.Duration(esc.Remember)
	if remember == 0 {
		remember = 30 * 24 * time.Hour
	}
	d.Escalate = detector.Escalation{Factor: esc.Factor, Max: time.Duration(esc.Max), Remember: remember}
}

// isFieldName says s can name an audit field: a JSON key of letters,
// digits, _ . and -, starting with a letter or _, at most 64 bytes.
func isFieldName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z'):
		case i > 0 && (c == '.' || c == '-' || ('0' <= c && c <= '9')):
		default:
			return false
		}
	}
	return true
}

// Fields are the audit fields the set's rules group by or count, beyond
// client_ip, action and username: what a source must read from each line.
func (s *Set) Fields() []string {
	var out []string
	for _, r := range s.Config.Rules {
		for _, f := range []string{r.GroupBy, r.Distinct} {
			switch f {
			case "", "client_ip", "username", "action":
				continue
			}
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// severity checks the severity scale (at sevNode) and compiles it.
func (p *parser) severity(sevNode *yaml.Node, scale []Severity) []detector.SeverityLevel {
	var out []detector.SeverityLevel
	levels := map[string]bool{}
	for i, s := range scale {
		n := sevNode.Content[i]
		if s.Level == "" {
			p.errorf(n, "severity level without a name")
		}
		if levels[s.Level] {
			p.errorf(field(n, "level"), "duplicate severity level %q", s.Level)
		}
		levels[s.Level] = true
		if i > 0 && s.Above >= scale[i-1].Above {
			// A level the one before always takes first could never be
			// reached, and the ranks (colours, burst severity) follow
			// the order.
			p.errorf(field(n, "above"), "severity level %q: above %g is not below the level before it (%g); list levels from the most severe down", s.Level, s.Above, scale[i-1].Above)
		}
		out = append(out, detector.SeverityLevel{Level: s.Level, Above: s.Above})
	}
	return out
}

// Duration is a YAML duration: Go syntax (90s, 5m, 1h30m) plus whole days (7d).
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := duration.Parse(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return Error{Line: n.Line, Col: n.Column, Msg: fmt.Sprintf("bad duration %s: want e.g. 30s, 5m, 24h or 7d", describe(n))}
	}
	*d = Duration(v)
	return nil
}

// Prefix is a CIDR or a single address in YAML.
type Prefix netip.Prefix

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	bad := Error{Line: n.Line, Col: n.Column, Msg: fmt.Sprintf("bad network %s: want a CIDR such as 10.0.0.0/8 or an address", describe(n))}
	if n.Kind != yaml.ScalarNode {
		return bad
	}
	pf, err := cidr.Parse(n.Value)
	if err != nil {
		return bad
	}
	*p = Prefix(pf)
	return nil
}

func syntaxError(name string, err error) Error {
	// yaml.v3 reports "yaml: line N: message".
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ":"); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line, msg = n, strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return Error{name, line, 1, msg}
}

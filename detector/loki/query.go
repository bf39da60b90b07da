package loki

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unsafe"
)

// DefaultQuery selects the audit events the default rules read: failed
// logins (runbook SEC-010) and those that worked (possible takeovers). Loki is sent
// only its stream selector and line filter; the daemon checks the rest.
const DefaultQuery = `{service="audit"} |= "auth_" | json | action=~"auth_failed|auth_succeeded"`

// Query is a LogQL log query split in two: the part Loki is sent (the
// stream selector and the line filters before any other stage), and the
// stages after it, which authguard checks on each line itself.
//
// The split exists because Loki's live tail silently loses entries when its
// query has a parser or label-filter stage (LOKI-FACTS.md: 15 pushed, 6
// tailed), while a selector with line filters arrives whole.
type Query struct {
	// Full is the query as configured; metric queries (which Loki answers
	// from storage, without loss) use it whole.
	Full string
	// Remote is what tails and catch-up queries send to Loki.
	Remote string
	// Selector is the stream selector alone, e.g. {service="audit"}.
	Selector string

	local []localStage
	want  []string // label names the filters read
}

type stageKind int

const (
	lineContains stageKind = iota
	lineNotContains
	lineMatches
	lineNotMatches
	jsonParser
	labelFilter
)

type localStage struct {
	kind  stageKind
	text  string // line filter text, or the label filter's value
	re    *regexp.Regexp
	label string // label filters: the label's name
	op    string // label filters: = != =~ !~
}

// Local reports whether some stages are checked by authguard rather than
// by Loki.
func (q *Query) Local() bool { return len(q.local) > 0 }

// ParseQuery splits a LogQL log query. It accepts a stream selector, line
// filters (|= != |~ !~), the json parser without parameters and string
// label filters (= != =~ !~); any other stage is refused with an error that
// says why, since authguard cannot check it and Loki's tail would lose
// entries with it.
func ParseQuery(s string) (*Query, error) {
	q := &Query{Full: s}
	p := &queryLexer{s: s}
	if err := p.selector(); err != nil {
		return nil, err
	}
	q.Selector = strings.TrimSpace(s[:p.i])
	remoteEnd := p.i
	remote := true // still in the part Loki is sent
	for {
		p.space()
		if p.at() == 0 {
			break
		}
		st, isFilter, err := p.lineFilter()
		switch {
		case err != nil:
			return nil, err
		case isFilter && remote:
			remoteEnd = p.i
			continue
		case isFilter:
			q.local = append(q.local, st)
			continue
		}
		if !p.eat("|") {
			return nil, p.errorf("want a line filter or | and a stage")
		}
		remote = false
		if st, err = p.stage(); err != nil {
			return nil, err
		}
		q.local = append(q.local, st)
	}
	q.Remote = strings.TrimSpace(s[:remoteEnd])
	q.want = q.wanted()
	return q, nil
}

// selector reads the stream selector, {name="value", ...}.
func (p *queryLexer) selector() error {
	p.space()
	if !p.eat("{") {
		return p.errorf("a query starts with a stream selector in braces, like {service=\"audit\"}")
	}
	for {
		p.space()
		if p.eat("}") {
			return nil
		}
		if p.at() == 0 {
			return p.errorf("the stream selector is not closed with }")
		}
		if _, err := p.ident(); err != nil {
			return err
		}
		p.space()
		if _, ok := p.op("=~", "!~", "!=", "="); !ok {
			return p.errorf("want = != =~ or !~ in the stream selector")
		}
		if _, err := p.str(); err != nil {
			return err
		}
		p.space()
		if p.at() == 0 {
			return p.errorf("the stream selector is not closed with }")
		}
		if !p.eat(",") && p.at() != '}' {
			return p.errorf("want , or } in the stream selector")
		}
	}
}

// lineFilter reads a line filter (|= != |~ !~ and a string) if one comes
// next; ok is false, and nothing read, when none does.
func (p *queryLexer) lineFilter() (st localStage, ok bool, err error) {
	col := p.i
	op, ok := p.op("|=", "!=", "|~", "!~")
	if !ok {
		return localStage{}, false, nil
	}
	text, err := p.str()
	if err != nil {
		return localStage{}, true, err
	}
	st = localStage{text: text}
	switch op {
	case "|=":
		st.kind = lineContains
	case "!=":
		st.kind = lineNotContains
	case "|~", "!~":
		st.kind = lineMatches
		if op == "!~" {
			st.kind = lineNotMatches
		}
		if st.re, err = regexp.Compile(text); err != nil {
			return localStage{}, true, fmt.Errorf("--loki-query col %d: line filter %s %q: %w", col+1, op, text, err)
		}
	}
	p.space()
	if p.word("or") {
		return localStage{}, true, p.errorf("line filters joined with \"or\" are not supported; use one |~ with an alternation")
	}
	return st, true, nil
}

// stage reads what follows a |: the json parser, or a string label filter;
// any other stage is refused, saying why.
func (p *queryLexer) stage() (localStage, error) {
	p.space()
	if p.word("json") {
		p.space()
		if c := p.at(); c != 0 && c != '|' && c != '!' {
			return localStage{}, p.errorf("| json with parameters is not supported: authguard reads the fields it needs itself; write plain | json")
		}
		return localStage{kind: jsonParser}, nil
	}
	start := p.i
	unsupported := func(what string) error {
		return fmt.Errorf("--loki-query col %d: stage %q: authguard checks | json and string label filters itself and sends Loki only the stream selector and line filters (Loki's tail silently loses entries with parser stages); %s", start+1, until(p.s[start:], '|'), what)
	}
	name, err := p.ident()
	if err != nil {
		return localStage{}, unsupported("other stages are not supported")
	}
	p.space()
	op, ok := p.op("=~", "!~", "!=", "=")
	if !ok || strings.HasPrefix(p.s[p.i:], "=") {
		return localStage{}, unsupported("other stages, and numeric comparisons, are not supported")
	}
	value, err := p.str()
	if err != nil {
		return localStage{}, err
	}
	st := localStage{kind: labelFilter, label: name, op: op, text: value}
	if op == "=~" || op == "!~" {
		_, err := regexp.Compile(value)
		re, err2 := regexp.Compile("^(?:" + value + ")$")
		if err == nil {
			err = err2
		}
		if err != nil {
			return localStage{}, fmt.Errorf("--loki-query col %d: label filter %s%s%q: %w", start+1, name, op, value, err)
		}
		st.re = re
	}
	return st, nil
}

// until returns s up to (not including) the first c, trimmed.
func until(s string, c byte) string {
	if i := strings.IndexByte(s, c); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// Keep reports whether a line of a stream with these labels passes the
// stages authguard checks itself, as Loki would have decided: label filters
// see the stream's labels and, after | json, the line's fields (nested
// names joined with "_"; a field named like a stream label is
// NAME_extracted, as in Loki). A label that is absent is "".
func (q *Query) Keep(labels map[string]string, line string) bool {
	var fields map[string]string
	parsed := false
	for _, st := range q.local {
		switch st.kind {
		case lineContains:
			if !strings.Contains(line, st.text) {
				return false
			}
		case lineNotContains:
			if strings.Contains(line, st.text) {
				return false
			}
		case lineMatches:
			if !st.re.MatchString(line) {
				return false
			}
		case lineNotMatches:
			if st.re.MatchString(line) {
				return false
			}
		case jsonParser:
			if !parsed {
				fields = jsonFields(line, labels, q.want)
				parsed = true
			}
		case labelFilter:
			v, ok := fields[st.label]
			if !ok {
				v = labels[st.label]
			}
			var match bool
			switch st.op {
			case "=":
				match = v == st.text
			case "!=":
				match = v != st.text
			case "=~":
				match = st.re.MatchString(v)
			default:
				match = !st.re.MatchString(v)
			}
			if !match {
				return false
			}
		}
	}
	return true
}

// parses reports whether the query has a | json stage.
func (q *Query) parses() bool {
	for _, st := range q.local {
		if st.kind == jsonParser {
			return true
		}
	}
	return false
}

// wanted lists the label names the filters read.
func (q *Query) wanted() []string {
	var names []string
	for _, st := range q.local {
		if st.kind == labelFilter {
			names = append(names, st.label)
		}
	}
	return names
}

// jsonFields extracts from a JSON line the fields named in want, under the
// names Loki's json parser gives them. A line that is not a JSON object has
// no fields.
func jsonFields(line string, stream map[string]string, want []string) map[string]string {
	out := map[string]string{}
	if len(want) == 0 {
		return out
	}
	d := frameDecoder{b: unsafe.Slice(unsafe.StringData(line), len(line))} // read only
	var walk func(prefix string) error
	walk = func(prefix string) error {
		return d.object(func(key []byte) error {
			name := prefix + sanitizeLabel(key)
			switch d.peek() {
			case '{':
				return walk(name + "_")
			case '[':
				return d.skip() // Loki's json parser skips arrays
			case '"':
				v, err := d.str()
				if err == nil {
					out[extractedName(name, stream)] = v
				}
				return err
			}
			start := d.i
			if err := d.skip(); err != nil {
				return err
			}
			v := string(d.b[start:d.i])
			if v == "null" {
				v = ""
			}
			out[extractedName(name, stream)] = v
			return nil
		})
	}
	if d.peek() != '{' || walk("") != nil {
		return map[string]string{}
	}
	return out
}

func extractedName(name string, stream map[string]string) string {
	if _, clash := stream[name]; clash {
		return name + "_extracted"
	}
	return name
}

// sanitizeLabel maps a JSON key to a label name as Loki does: every byte
// that is not a letter, digit or underscore becomes "_".
func sanitizeLabel(key []byte) string {
	b := []byte(string(key))
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// queryLexer reads a LogQL query by hand: the few tokens authguard needs,
// with positions for errors.
type queryLexer struct {
	s string
	i int
}

func (p *queryLexer) errorf(format string, args ...any) error {
	return fmt.Errorf("--loki-query col %d: %s", p.i+1, fmt.Sprintf(format, args...))
}

func (p *queryLexer) at() byte {
	if p.i >= len(p.s) {
		return 0
	}
	return p.s[p.i]
}

func (p *queryLexer) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *queryLexer) eat(tok string) bool {
	if strings.HasPrefix(p.s[p.i:], tok) {
		p.i += len(tok)
		return true
	}
	return false
}

// word eats w when it stands alone (not the start of a longer name).
func (p *queryLexer) word(w string) bool {
	if !strings.HasPrefix(p.s[p.i:], w) {
		return false
	}
	if j := p.i + len(w); j < len(p.s) && isIdent(p.s[j]) {
		return false
	}
	p.i += len(w)
	return true
}

func (p *queryLexer) op(ops ...string) (string, bool) {
	for _, o := range ops {
		if p.eat(o) {
			return o, true
		}
	}
	return "", false
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (p *queryLexer) ident() (string, error) {
	start := p.i
	for p.i < len(p.s) && isIdent(p.s[p.i]) && (p.i > start || p.s[p.i] < '0' || p.s[p.i] > '9') {
		p.i++
	}
	if p.i == start {
		return "", p.errorf("want a label name")
	}
	return p.s[start:p.i], nil
}

// str reads a "double-quoted" (Go escapes) or `back-quoted` string.
func (p *queryLexer) str() (string, error) {
	p.space()
	q := p.at()
	if q != '"' && q != '`' {
		return "", p.errorf("want a quoted string")
	}
	end := p.i + 1
	for end < len(p.s) && p.s[end] != q {
		if p.s[end] == '\\' && q == '"' {
			end++
		}
		end++
	}
	if end >= len(p.s) {
		return "", p.errorf("unterminated string")
	}
	raw := p.s[p.i : end+1]
	if q == '`' {
		p.i = end + 1
		return raw[1 : len(raw)-1], nil
	}
	v, err := strconv.Unquote(raw)
	if err != nil {
		return "", p.errorf("bad string %s", raw)
	}
	p.i = end + 1
	return v, nil
}

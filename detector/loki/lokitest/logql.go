package lokitest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// query is the LogQL subset the fake understands: a stream selector followed
// by line filters (|= != |~ !~), "| json" and label filters (= != =~ !~).
type query struct {
	selector []matcher
	stages   []stage
}

type matcher struct {
	name, op, value string
	re              *regexp.Regexp
}

func (m matcher) matches(v string, ok bool) bool {
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return m.re.MatchString(v)
	default: // !~
		return !m.re.MatchString(v)
	}
}

type stage struct {
	kind string // "line", "json", "label"
	m    matcher
}

type parseError struct {
	col int
	msg string
}

func (e parseError) Error() string {
	return fmt.Sprintf("parse error at line 1, col %d: %s", e.col, e.msg)
}

type lexer struct {
	s   string
	pos int
}

func (l *lexer) skip() {
	for l.pos < len(l.s) && unicode.IsSpace(rune(l.s[l.pos])) {
		l.pos++
	}
}

func (l *lexer) errorf(format string, args ...any) error {
	return parseError{l.pos + 1, fmt.Sprintf(format, args...)}
}

func (l *lexer) eat(tok string) bool {
	l.skip()
	if strings.HasPrefix(l.s[l.pos:], tok) {
		l.pos += len(tok)
		return true
	}
	return false
}

func (l *lexer) ident() (string, error) {
	l.skip()
	start := l.pos
	for l.pos < len(l.s) && (l.s[l.pos] == '_' || unicode.IsLetter(rune(l.s[l.pos])) || (l.pos > start && unicode.IsDigit(rune(l.s[l.pos])))) {
		l.pos++
	}
	if start == l.pos {
		if l.pos == len(l.s) {
			return "", l.errorf("syntax error: unexpected $end, expecting IDENTIFIER")
		}
		return "", l.errorf("syntax error: unexpected %q, expecting IDENTIFIER", l.s[l.pos:l.pos+1])
	}
	return l.s[start:l.pos], nil
}

func (l *lexer) str() (string, error) {
	l.skip()
	if l.pos >= len(l.s) {
		return "", l.errorf("syntax error: unexpected $end, expecting STRING")
	}
	q := l.s[l.pos]
	if q != '"' && q != '`' {
		return "", l.errorf("syntax error: unexpected %q, expecting STRING", l.s[l.pos:l.pos+1])
	}
	end := l.pos + 1
	for end < len(l.s) && l.s[end] != q {
		if l.s[end] == '\\' && q == '"' {
			end++
		}
		end++
	}
	if end >= len(l.s) {
		return "", l.errorf("syntax error: unterminated string")
	}
	raw := l.s[l.pos : end+1]
	l.pos = end + 1
	if q == '`' {
		return raw[1 : len(raw)-1], nil
	}
	return strconv.Unquote(raw)
}

func (l *lexer) op(ops ...string) (string, bool) {
	l.skip()
	for _, o := range ops {
		if strings.HasPrefix(l.s[l.pos:], o) {
			l.pos += len(o)
			return o, true
		}
	}
	return "", false
}

func (l *lexer) matcher() (matcher, error) {
	name, err := l.ident()
	if err != nil {
		return matcher{}, err
	}
	op, ok := l.op("=~", "!~", "!=", "=")
	if !ok {
		return matcher{}, l.errorf("syntax error: unexpected %s, expecting = or != or =~ or !~", rest(l))
	}
	v, err := l.str()
	if err != nil {
		return matcher{}, err
	}
	m := matcher{name: name, op: op, value: v}
	if op == "=~" || op == "!~" {
		if m.re, err = regexp.Compile("^(?:" + v + ")$"); err != nil {
			return matcher{}, l.errorf("invalid regexp %q", v)
		}
	}
	return m, nil
}

func rest(l *lexer) string {
	if l.pos >= len(l.s) {
		return "$end"
	}
	return strconv.Quote(l.s[l.pos : l.pos+1])
}

func parseQuery(s string) (*query, error) {
	l := &lexer{s: s}
	q := &query{}
	if !l.eat("{") {
		return nil, l.errorf("syntax error: unexpected %s, expecting {", rest(l))
	}
	for {
		m, err := l.matcher()
		if err != nil {
			return nil, err
		}
		q.selector = append(q.selector, m)
		if l.eat(",") {
			continue
		}
		if l.eat("}") {
			break
		}
		return nil, l.errorf("syntax error: unexpected %s, expecting } or ,", rest(l))
	}
	if !hasPositive(q.selector) {
		return nil, parseError{1, "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will"}
	}
	for {
		l.skip()
		if l.pos == len(l.s) {
			return q, nil
		}
		if op, ok := l.op("|=", "!=", "|~", "!~"); ok {
			v, err := l.str()
			if err != nil {
				return nil, err
			}
			m := matcher{op: op, value: v}
			if op == "|~" || op == "!~" {
				re, err := regexp.Compile(v)
				if err != nil {
					return nil, l.errorf("invalid regexp %q", v)
				}
				m.re = re
			}
			q.stages = append(q.stages, stage{kind: "line", m: m})
			continue
		}
		if !l.eat("|") {
			return nil, l.errorf("syntax error: unexpected %s", rest(l))
		}
		if l.eat("json") {
			q.stages = append(q.stages, stage{kind: "json"})
			continue
		}
		m, err := l.matcher()
		if err != nil {
			return nil, err
		}
		q.stages = append(q.stages, stage{kind: "label", m: m})
	}
}

// lossy reports whether the query has a parser or label-filter stage, with
// which Loki's tails lose entries.
func (q *query) lossy() bool {
	for _, st := range q.stages {
		if st.kind != "line" {
			return true
		}
	}
	return false
}

func hasPositive(ms []matcher) bool {
	for _, m := range ms {
		if (m.op == "=" && m.value != "") || (m.op == "=~" && !m.re.MatchString("")) {
			return true
		}
	}
	return false
}

// selects reports whether a stream with these labels is selected.
func (q *query) selects(labels map[string]string) bool {
	for _, m := range q.selector {
		v, ok := labels[m.name]
		if !m.matches(v, ok) {
			return false
		}
	}
	return true
}

// process runs the pipeline over one line of a selected stream and returns the
// labels of the result stream, or ok=false when the line is filtered out.
func (q *query) process(stream map[string]string, line string) (map[string]string, bool) {
	labels := stream
	copied := false
	own := func() {
		if !copied {
			labels = cloneLabels(stream)
			copied = true
		}
	}
	for _, st := range q.stages {
		switch st.kind {
		case "line":
			var ok bool
			switch st.m.op {
			case "|=":
				ok = strings.Contains(line, st.m.value)
			case "!=":
				ok = !strings.Contains(line, st.m.value)
			case "|~":
				ok = st.m.re.MatchString(line)
			default:
				ok = !st.m.re.MatchString(line)
			}
			if !ok {
				return nil, false
			}
		case "json":
			own()
			var obj map[string]any
			dec := json.NewDecoder(strings.NewReader(line))
			dec.UseNumber()
			if err := dec.Decode(&obj); err != nil || obj == nil {
				labels["__error__"] = "JSONParserErr"
				labels["__error_details__"] = "Value looks like object, but can't find closing '}' symbol"
				continue
			}
			flatten(labels, stream, "", obj)
		case "label":
			v, ok := labels[st.m.name]
			if !st.m.matches(v, ok) {
				return nil, false
			}
		}
	}
	return labels, true
}

// flatten adds extracted JSON fields as labels the way Loki's json parser
// does: nested keys joined by "_", values as strings, and a field that
// collides with a stream label renamed with the suffix "_extracted".
func flatten(labels, stream map[string]string, prefix string, obj map[string]any) {
	for k, v := range obj {
		name := sanitize(prefix + k)
		switch v := v.(type) {
		case map[string]any:
			flatten(labels, stream, name+"_", v)
			continue
		case []any:
			continue // Loki's json stage skips arrays
		}
		if _, clash := stream[name]; clash {
			name += "_extracted"
		}
		switch v := v.(type) {
		case string:
			labels[name] = v
		case json.Number:
			labels[name] = v.String()
		case bool:
			labels[name] = strconv.FormatBool(v)
		case nil:
			labels[name] = ""
		}
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return '_'
	}, s)
}

func cloneLabels(m map[string]string) map[string]string {
	c := make(map[string]string, len(m)+8)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// labelString renders labels the way Loki does: {a="1", b="2"}, sorted.
func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(m[k]))
	}
	b.WriteByte('}')
	return b.String()
}

package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/authguard/authguard/detector"
)

// TestFile is a file of rule unit tests, in the spirit of promtool's: input
// events at times relative to the start, and the decisions expected.
type TestFile struct {
	// RuleFiles are the rules under test, relative to the test file.
	RuleFiles []string   `yaml:"rule_files"`
	Tests     []RuleTest `yaml:"tests"`
}

// RuleTest is one scenario.
type RuleTest struct {
	Name   string         `yaml:"name"`
	Events []TestEvent    `yaml:"events"`
	Expect []TestDecision `yaml:"expect"`
}

// TestEvent is one event, or Times events Every apart.
type TestEvent struct {
	At       Duration `yaml:"at"`
	Every    Duration `yaml:"every"`
	Times    int      `yaml:"times"`
	Action   string   `yaml:"action"`
	ClientIP string   `yaml:"client_ip"`
	Username string   `yaml:"username"`
	// Usernames gives repeated events one username each, in turn.
	Usernames []string `yaml:"usernames"`
	// ClientNet gives repeated events one address each from a network, in
	// turn, instead of ClientIP (many clients, e.g. for global rules).
	ClientNet string `yaml:"client_net"`
}

// TestDecision is an expected decision; fields left out are not compared.
type TestDecision struct {
	At       Duration `yaml:"at"`
	Rule     string   `yaml:"rule"`
	Key      string   `yaml:"key"`
	Action   string   `yaml:"action"`
	TTL      Duration `yaml:"ttl"`
	Severity string   `yaml:"severity"`
	Count    int      `yaml:"count"`
}

// TestResult is the outcome of one RuleTest.
type TestResult struct {
	Name     string
	Failures []string
}

// testStart is the time the relative times of a test count from.
var testStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// RunTests runs the tests in one file.
func RunTests(path string) ([]TestResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rule tests: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(path, err)}
	}
	if len(root.Content) == 0 {
		return nil, Errors{{path, 1, 1, "empty test file"}}
	}
	p := &parser{file: path}
	p.check(root.Content[0], reflect.TypeOf(TestFile{}))
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	var tf TestFile
	if err := root.Content[0].Decode(&tf); err != nil {
		var pe Error
		if errors.As(err, &pe) {
			pe.File = path
			return nil, Errors{pe}
		}
		return nil, Errors{syntaxError(path, err)}
	}
	if len(tf.RuleFiles) == 0 {
		return nil, Errors{{path, 1, 1, "no rule_files to test"}}
	}
	var cfg detector.Config
	for _, rf := range tf.RuleFiles {
		if !filepath.IsAbs(rf) {
			rf = filepath.Join(filepath.Dir(path), rf)
		}
		set, err := Load(rf)
		if err != nil {
			return nil, err
		}
		cfg.Rules = append(cfg.Rules, set.Config.Rules...)
		cfg.Allow = append(cfg.Allow, set.Config.Allow...)
		if cfg.Takeover.Name == "" {
			cfg.Takeover = set.Config.Takeover
		}
		if cfg.Severity == nil {
			cfg.Severity = set.Config.Severity
		}
	}
	var results []TestResult
	for i, tc := range tf.Tests {
		r := TestResult{Name: tc.Name}
		if r.Name == "" {
			r.Name = fmt.Sprintf("test %d", i+1)
		}
		r.Failures, err = runTest(cfg, tc)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, r.Name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func runTest(cfg detector.Config, tc RuleTest) ([]string, error) {
	engine, err := detector.New(cfg)
	if err != nil {
		return nil, err
	}
	var events []detector.Event
	for _, te := range tc.Events {
		var ip netip.Addr
		var net netip.Prefix
		if te.ClientNet != "" {
			if net, err = netip.ParsePrefix(te.ClientNet); err != nil {
				return nil, fmt.Errorf("event client_net %q: %w", te.ClientNet, err)
			}
			net = net.Masked()
		} else if ip, err = netip.ParseAddr(te.ClientIP); err != nil {
			return nil, fmt.Errorf("event client_ip %q: %w", te.ClientIP, err)
		}
		n := max(te.Times, 1)
		next := net.Addr()
		for k := range n {
			if net.IsValid() {
				next = next.Next()
				if !net.Contains(next) {
					return nil, fmt.Errorf("client_net %s has fewer than %d addresses", net, n)
				}
				ip = next
			}
			ev := detector.Event{Time: testStart.Add(time.Duration(te.At) + time.Duration(k)*time.Duration(te.Every)),
				Action: te.Action, IP: ip.Unmap(), Username: te.Username}
			if ev.Action == "" {
				ev.Action = detector.ActionAuthFailed
			}
			if len(te.Usernames) > 0 {
				ev.Username = te.Usernames[k%len(te.Usernames)]
			}
			events = append(events, ev)
		}
	}
	// Stable: events given at the same time keep their order.
	sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(events[j].Time) })
	var got []detector.Decision
	for _, ev := range events {
		got = engine.Observe(ev, ev.Time, got)
	}
	var failures []string
	for i, want := range tc.Expect {
		if i >= len(got) {
			failures = append(failures, fmt.Sprintf("missing decision %d: want %s", i+1, describeWant(want)))
			continue
		}
		if diff := compare(want, got[i]); diff != "" {
			failures = append(failures, fmt.Sprintf("decision %d: %s", i+1, diff))
		}
	}
	for _, d := range got[min(len(got), len(tc.Expect)):] {
		failures = append(failures, fmt.Sprintf("unexpected decision: %s", describeGot(d)))
	}
	return failures, nil
}

func compare(want TestDecision, d detector.Decision) string {
	var diffs []string
	at := d.Time.Sub(testStart)
	check := func(name string, set bool, w, g any) {
		if set && w != g {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %v", name, g, w))
		}
	}
	check("at", true, time.Duration(want.At), at)
	check("rule", want.Rule != "", want.Rule, d.Rule)
	check("key", want.Key != "", want.Key, d.Key)
	check("action", want.Action != "", want.Action, string(d.Kind))
	check("ttl", want.TTL != 0, time.Duration(want.TTL), d.TTL)
	check("severity", want.Severity != "", want.Severity, d.Severity)
	check("count", want.Count != 0, want.Count, d.Count)
	return strings.Join(diffs, "; ")
}

func describeWant(w TestDecision) string {
	return fmt.Sprintf("%s at %s for %q", w.Rule, detector.FormatDuration(time.Duration(w.At)), w.Key)
}

func describeGot(d detector.Decision) string {
	return fmt.Sprintf("%s %s at %s for %q (count %d, %s)", d.Rule, d.Kind, detector.FormatDuration(d.Time.Sub(testStart)), d.Key, d.Count, d.Severity)
}

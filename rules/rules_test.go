package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadRulesNameTheirPosition runs every fixture in testdata: its first line
// says which error, at which LINE:COL, a user must see.
func TestBadRulesNameTheirPosition(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d fixtures found", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want := path + ":" + strings.TrimPrefix(first, "# want: ")
			_, err = Parse(path, data)
			if err == nil {
				t.Fatalf("accepted; want %q", want)
			}
			if err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
		})
	}
}

func TestDefaultRulesAreValid(t *testing.T) {
	set, _ := Default()
	if len(set.Config.Rules) != 4 || set.MaxWindow != 24*time.Hour || set.Config.Takeover.Memory != 24*time.Hour {
		t.Fatalf("default rules: %+v", set)
	}
	burst := set.Config.Rules[0]
	if burst.Threshold != 5 || burst.Window != 24*time.Hour || burst.BlockTTL != 5*time.Minute || !burst.PerIP {
		t.Errorf("SEC-010 rule compiled as %+v", burst)
	}
}

func TestAllowAcceptsAddressesAndNetworks(t *testing.T) {
	set, err := Parse("r.yaml", []byte("rules: [{name: a, window: 1m, threshold: 1, alert: true}]\nallow: [10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, p := range set.Config.Allow {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "10.0.0.0/8 192.0.2.7/32 2001:db8::/32" {
		t.Errorf("allow = %v", got)
	}
}

func TestTheDefaultRulesPassTheirUnitTests(t *testing.T) {
	results, err := RunTests("examples/default_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 6 {
		t.Fatalf("%d tests ran", len(results))
	}
	for _, r := range results {
		for _, f := range r.Failures {
			t.Errorf("%s: %s", r.Name, f)
		}
	}
}

func TestRuleTestsReportWrongExpectations(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "r.yaml"), []byte("rules: [{name: burst, match: {action: auth_failed}, group_by: client_ip, window: 1h, threshold: 2, block: {ttl: 5m}}]\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "t.yaml"), []byte(`rule_files: [r.yaml]
tests:
  - name: wrong
    events: [{at: 0s, every: 1s, times: 2, client_ip: 192.0.2.1}]
    expect: [{at: 1s, rule: burst, ttl: 10m}, {at: 2s, rule: burst}]
`), 0o644)
	results, err := RunTests(filepath.Join(dir, "t.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(results[0].Failures, " | ")
	if got != "decision 1: ttl 5m0s, want 10m0s | missing decision 2: want burst at 2s for \"\"" {
		t.Errorf("failures %q", got)
	}
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("rule_files: [r.yaml]\ntests:\n  - name: x\n    evnts: []\n"), 0o644)
	if _, err := RunTests(filepath.Join(dir, "bad.yaml")); err == nil || !strings.Contains(err.Error(), `bad.yaml:4:5: unknown field "evnts"`) {
		t.Errorf("err = %v", err)
	}
}

// FuzzParse: no rules file, however broken, panics the decoder, and every
// error names a position.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	files = append(files, "examples/default.yaml")
	for _, p := range files {
		data, _ := os.ReadFile(p)
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, text string) {
		_, err := Parse("f.yaml", []byte(text))
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml:") {
			t.Fatalf("error without a position: %v", err)
		}
	})
}

// README shows the default rules as they are shipped: a security engineer
// believes what it says is exempt, blocked and paged.
func TestREADMEShowsTheDefaultRules(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	def, _ := os.ReadFile("examples/default.yaml")
	body := string(def[strings.Index(string(def), "\nrules:")+1:])
	if !strings.Contains(string(readme), "```yaml\n"+body+"```") {
		t.Errorf("README's default rules block differs from rules/examples/default.yaml (from its rules: line on)")
	}
}

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeCommands are the command lines of README's "Operator commands"
// block, each split into words as a shell would, with the optional
// "[-o json]" kept and other optional parts left out.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### Operator commands")
	_, block, ok2 := strings.Cut(section, "```sh\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no Operator commands block")
	}
	optional := regexp.MustCompile(`\[([^\]]*)\]`)
	var out [][]string
	for _, line := range strings.Split(block, "\n") {
		if i := strings.Index(line, "  #"); i >= 0 {
			line = line[:i]
		}
		line = optional.ReplaceAllStringFunc(line, func(m string) string {
			if m == "[-o json]" {
				return "-o json"
			}
			return ""
		})
		words := shellWords(strings.TrimSpace(line))
		if len(words) > 1 && words[0] == "authguard" {
			out = append(out, words[1:])
		}
	}
	if len(out) < 10 {
		t.Fatalf("found %d commands in README", len(out))
	}
	return out
}

// shellWords splits a command line at spaces, keeping "quoted words".
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	quoted, in := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				words = append(words, cur.String())
				cur.Reset()
			}
			in = false
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// Every command README shows an operator runs as written (the example
// files standing in for the operator's), against a redis-server, exits 0,
// and a listing asked for JSON prints JSON.
func TestEveryDocumentedCommandRuns(t *testing.T) {
	r := startRedisServer(t)
	bin := filepath.Join(binDir, "authguard")
	files := map[string]string{"rules.yaml": "../rules/examples/default.yaml", "rules_test.yaml": "../rules/examples/default_test.yaml",
		"attack.log": "../rules/examples/attack.log"}
	// An incident for "incidents show" to report.
	if out, err := exec.Command(bin, "blocks", "add", "192.0.2.200", "--ttl", "1h", "--redis-url", r.url()).CombinedOutput(); err != nil {
		t.Fatalf("blocks add: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "incidents", "list", "-o", "json", "--redis-url", r.url()).Output()
	var incidents []struct{ ID string }
	if err != nil || json.Unmarshal(out, &incidents) != nil || len(incidents) == 0 {
		t.Fatalf("incidents list: %v\n%s", err, out)
	}
	for _, args := range readmeCommands(t) {
		for i, a := range args {
			if f, ok := files[a]; ok {
				args[i] = f
			}
			if incidentID.MatchString(a) {
				args[i] = incidents[0].ID
			}
		}
		switch args[0] {
		case "blocks", "accounts", "incidents":
			args = append(args, "--redis-url", r.url())
		}
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("authguard %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		if strings.Contains(strings.Join(args, " "), "-o json") && !json.Valid(out) {
			t.Errorf("authguard %s printed no JSON:\n%s", strings.Join(args, " "), out)
		}
	}
}

// incidentID matches an incident ID as README writes them.
var incidentID = regexp.MustCompile(`^[0-9]{10,}-[0-9]+$`)

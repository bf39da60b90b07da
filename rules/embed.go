package rules

import _ "embed"

//go:embed examples/default.yaml
var defaultRules []byte

// DefaultFile is the name under which the embedded default rules report errors.
const DefaultFile = "rules/examples/default.yaml"

// Default returns the embedded default rules (runbook SEC-010 and the
// playbook's global alarm) and their source text.
func Default() (*Set, []byte) {
	set, err := Parse(DefaultFile, defaultRules)
	if err != nil {
		panic("embedded default rules are invalid: " + err.Error()) // caught by TestDefaultRulesAreValid
	}
	return set, defaultRules
}

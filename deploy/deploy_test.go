package deploy

import (
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestForwardAuthExamples checks that the example proxy configurations are
// well-formed and point at a gateway run in forward-auth mode.
func TestForwardAuthExamples(t *testing.T) {
	for _, name := range []string{"gateway/nginx.conf", "gateway/traefik-dynamic.yaml", "gateway/envoy.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if !strings.Contains(text, "authguard-gateway --mode forward-auth") || !strings.Contains(text, "authguard-gateway:8080") {
			t.Errorf("%s does not show the gateway in forward-auth mode on :8080", name)
		}
		if strings.HasSuffix(name, ".yaml") {
			var doc map[string]any
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/authguard/authguard/cmd/internal/exitcode"
)

// The gateway's version, its h2c switch under the name its flag has, and
// usage errors that scripts can tell apart.
func TestTheGatewayCommandLine(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		out.Reset()
		if err := run(context.Background(), args, &out, &out); err != nil || !strings.HasPrefix(out.String(), "authguard-gateway ") {
			t.Errorf("%v: %q %v", args, out.String(), err)
		}
	}
	t.Setenv("AUTHGUARD_GATEWAY_H2C", "true")
	out.Reset()
	err := run(context.Background(), []string{"--check-config", "--upstream", "http://app:3000", "--h2c=false", "--bogus"}, &out, &out)
	if exitcode.Of(err) != exitcode.Usage {
		t.Errorf("an unknown flag: %v, exit %d", err, exitcode.Of(err))
	}
	for _, args := range [][]string{{"--upstream", "app:3000"}, {"--upstream", "http://app:3000", "--loki-push-url", "loki:3100"}} {
		if err := run(context.Background(), append(args, "--check-config"), &out, &out); exitcode.Of(err) != exitcode.Usage || !strings.Contains(fmt.Sprint(err), "want a URL such as") {
			t.Errorf("%v: %v, exit %d (want 2)", args, err, exitcode.Of(err))
		}
	}
	var c cli
	parser, err := newParser(&c, &out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"--upstream", "http://app:3000"}); err != nil || !c.H2C {
		t.Errorf("AUTHGUARD_GATEWAY_H2C=true: h2c %v, %v", c.H2C, err)
	}
}

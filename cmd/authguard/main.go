// Command authguard is the detection daemon and the operator CLI: it tails
// Loki for failed logins, blocks abusive IPs in Redis and pages on-call in
// Slack.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/authguard/authguard/cmd/internal/exitcode"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "authguard:", err)
		os.Exit(exitcode.Of(err))
	}
}

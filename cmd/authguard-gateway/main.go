// Command authguard-gateway enforces authguard's blocks in front of a login
// service: blocked client addresses get 403 AUTH_004, and every failed or
// successful login becomes an audit line for the detector.
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
		fmt.Fprintln(os.Stderr, "authguard-gateway:", err)
		os.Exit(exitcode.Of(err))
	}
}

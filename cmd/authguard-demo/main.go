// Command authguard-demo runs the whole loop on this machine against a
// scripted attack: a private redis-server, a fake Loki (lokitest), a demo
// login app, and the real authguard-gateway and authguard binaries, then
// narrates what each part does. `make demo` builds and runs it. Nothing of
// it is linked into the production binaries.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "authguard-demo:", err)
		os.Exit(1)
	}
}

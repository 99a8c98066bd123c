// Command txctl is the operator's CLI for txcoord: cluster membership,
// transactions, the in-doubt diff, recovery, heuristic resolution, the audit
// trail, snapshots and offline inspection. See `txctl --help` and
// docs/runbook.md; the logic lives in internal/txctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/txcoord/txcoord/internal/txctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := txctl.Main(ctx, os.Args[1:], txctl.Env{})
	stop()
	os.Exit(code)
}

// Command chaos drives the real refresher and reader processes through
// faults and reports what the fake upstream saw (see internal/chaos).
//
//	chaos [run] [--duration 60s] [--apps 3] [--replicas 3] [--json] ...
//	chaos reader ...   (started by chaos run; not for direct use)
//
// Exit codes: 0 every invariant held, 1 an invariant broke or the run
// failed, 2 bad usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenkeeper/tokenkeeper/internal/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := chaos.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

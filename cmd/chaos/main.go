// Command chaos drives the real refresher and reader processes through
// faults and reports what the fake upstream saw (see internal/chaos).
//
// From the module's directory (it builds ./cmd/refresher unless
// --refresher-bin is given; redis-server must be on PATH):
//
//	go build -o /tmp/chaos ./cmd/chaos
//	/tmp/chaos                                  # short run: 75 s, 3 apps, every fault once
//	/tmp/chaos --no-faults --duration 30s       # fetches must equal the ideal
//	/tmp/chaos --apps 1000 --duration 5m --json # long run, JSON report
//
// Progress and the fault schedule go to stderr, the report to stdout. The
// children's configs and logs stay in --work-dir (default: a new
// temporary directory, named in the report). Ctrl-C stops the run, kills
// every process it started and prints what was seen so far.
//
// "chaos reader ..." is the reader process the run starts; it is not
// meant to be run by hand.
//
// Exit codes: 0 every invariant held, 1 an invariant broke or the run
// failed or was interrupted, 2 bad usage.
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

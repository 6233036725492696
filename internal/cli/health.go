package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/healthcheck"
)

// defaultHealthAddr is probed when there is no configuration at all: the
// default http.addr (TestHealthDefaultIsConfigDefault holds them equal).
const defaultHealthAddr = "127.0.0.1:8080"

// healthFlags registers health's own flags on fs.
func healthFlags(fs *pflag.FlagSet) (addr *string, timeout *time.Duration) {
	addr = fs.String("addr", "", "host:port of the refresher to probe (default: http.addr of the configuration, on loopback if it listens on all addresses)")
	timeout = fs.Duration("timeout", 2*time.Second, "give up after this long")
	return addr, timeout
}

// health probes /readyz of the refresher at addr, or at the configuration's
// http.addr. Every failure exits 1 (see Run): Docker reserves a
// healthcheck's exit code 2.
func health(ctx context.Context, opts config.Options, addr string, timeout time.Duration, stdout io.Writer) error {
	if addr == "" {
		addr = defaultHealthAddr
		if opts.File != "" || os.Getenv("TOKENKEEPER_CONFIG") != "" || os.Getenv("TOKENKEEPER_APPS") != "" {
			cfg, err := config.Load(opts)
			if err != nil {
				return fmt.Errorf("health: the configuration gives no address to probe (pass --addr HOST:PORT): %w", err)
			}
			addr = cfg.HTTP.Addr
		}
	}
	u, err := healthcheck.ReadyURL(addr)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if err := healthcheck.Probe(ctx, u, timeout); err != nil {
		return fmt.Errorf("health: not ready: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "ready: GET %s: 200 OK\n", u)
	return err
}

// healthExit is the exit code of `health` for err: 0 or 1, never 2.
func healthExit(err error) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	return 1
}

// Command refresher is tokenkeeper's central control server (中控服务器):
// the elected leader of a fleet of replicas refreshes every app's WeChat
// access token ahead of expiry, and every replica serves the current token
// over HTTP.
//
//	refresher [serve] [--config FILE] [--demo] [--print-config] [--http-addr ADDR] ...
//	refresher token APPID            print the current token (JSON)
//	refresher invalidate APPID TOKEN report a token WeChat refused; print the current one
//	refresher status                 leader, and per app: token fingerprint, life left, last fetch
//	refresher config                 print the effective configuration, secrets redacted
//
// Configuration comes from a YAML file (--config or TOKENKEEPER_CONFIG),
// TOKENKEEPER_* environment variables and flags; see package
// internal/config. `serve --demo` needs neither Redis nor WeChat.
//
// Exit codes: 0 ok (including a clean shutdown on SIGINT/SIGTERM), 1
// runtime error, 2 bad usage or configuration.
//
// This command only parses arguments, handles signals and maps errors to
// exit codes. The work is done by internal/refresher (a replica),
// internal/tokencmd (token, invalidate), internal/status (status, and the
// last-fetch records replicas write) and internal/demo (serve --demo).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
	"github.com/tokenkeeper/tokenkeeper/internal/tokencmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills at once (the default)
		// in case the graceful shutdown hangs.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  refresher [serve] [--config FILE] [--demo] [--print-config] [flags]
  refresher token APPID [--config FILE]
  refresher invalidate APPID TOKEN [--config FILE]
  refresher status [--config FILE]
  refresher config [--config FILE]

Configuration: --config FILE (or TOKENKEEPER_CONFIG), then TOKENKEEPER_*
environment variables, then flags. serve --demo runs with an embedded Redis
and a fake WeChat, no configuration needed.

flags:
`

// usageError is bad usage or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	var ue usageError
	var ce *config.Error
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, &ue), errors.As(err, &ce), errors.Is(err, backend.ErrConfig):
		fmt.Fprintln(stderr, "refresher:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "refresher:", err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := pflag.NewFlagSet("refresher "+cmd, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", "", "YAML configuration file (env TOKENKEEPER_CONFIG)")
	config.RegisterFlags(fs)
	var demo, printConfig *bool
	if cmd == "serve" {
		demo = fs.Bool("demo", false, "run with an embedded Redis and a fake WeChat (no configuration needed)")
		printConfig = fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	}
	switch cmd {
	case "serve", "token", "invalidate", "status", "config":
	case "help":
		fs.Usage()
		return nil
	default:
		fs.Usage()
		return usagef("unknown command %q", cmd)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	pos := fs.Args()
	want := map[string]int{"serve": 0, "token": 1, "invalidate": 2, "status": 0, "config": 0}[cmd]
	if len(pos) != want {
		return usagef("%s takes %d argument(s), got %d: %q (see refresher --help)", cmd, want, len(pos), pos)
	}

	if cmd == "serve" && *demo {
		if *configFile != "" {
			return usagef("--demo and --config exclude each other: the demo brings its own configuration")
		}
		return runDemo(ctx, fs, *printConfig, stdout, stderr)
	}

	opts := config.Options{File: *configFile, Flags: fs}
	if cmd == "serve" && *configFile == "" && os.Getenv("TOKENKEEPER_CONFIG") == "" && os.Getenv("TOKENKEEPER_APPS") == "" {
		return usagef("no configuration: pass --config FILE (or set TOKENKEEPER_CONFIG / TOKENKEEPER_APPS and friends), or try `refresher serve --demo` for a self-contained demo")
	}
	cfg, err := config.Load(opts)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return err
		}
		return backend.Configf(err)
	}
	if cmd == "config" || (cmd == "serve" && *printConfig) {
		return cfg.Print(stdout)
	}
	log := newLogger(cfg, stderr)
	for _, name := range cfg.UnusedEnv {
		log.Warn("refresher: environment variable set but not read (a typo, or an app that is not listed?)", "var", name)
	}
	// token, invalidate and status talk to Redis directly with the
	// replicas' configuration: they need no running replica.
	switch cmd {
	case "token":
		if err := checkApp(cfg, pos[0]); err != nil {
			return err
		}
		return tokencmd.Token(ctx, cfg, pos[0], stdout)
	case "invalidate":
		if err := checkApp(cfg, pos[0]); err != nil {
			return err
		}
		if strings.TrimSpace(pos[1]) == "" {
			return usagef("invalidate: empty token")
		}
		return tokencmd.Invalidate(ctx, cfg, pos[0], pos[1], stdout)
	case "status":
		return status.Print(ctx, cfg, stdout)
	}
	return serve(ctx, cfg, log)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Log.Level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

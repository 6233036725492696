// Package cli is the refresher's command line: subcommands, flags, exit
// codes and signals. Two thin mains run it: cmd/refresher, the production
// binary, without a demo, and cmd/refresher-demo (what `make run` starts),
// which adds `serve --demo` and so links an embedded Redis and a fake
// WeChat. The rules live here once; the production binary links no test
// code (cmd/refresher's TestProductionBinaryLinksNoTestCode).
//
// This package only parses arguments, handles signals and maps errors to
// exit codes. The work is done by internal/refresher (a replica),
// internal/tokencmd (token, invalidate), internal/status (status, and the
// last-fetch records replicas write) and, in the demo binary only,
// internal/demo (serve --demo).
package cli

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
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
	"github.com/tokenkeeper/tokenkeeper/internal/tokencmd"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Demo runs `serve --demo`: it starts its own backend, builds the
// replica's configuration with the flags in fs applied over it, prints
// that configuration if printConfig, else serves (see Serve) until ctx is
// done. Only cmd/refresher-demo has one.
type Demo func(ctx context.Context, fs *pflag.FlagSet, printConfig bool, stdout, stderr io.Writer) error

// Main runs the command line on os.Args and exits with its code. demo is
// nil in the production binary: `serve --demo` then fails, saying how to
// get the demo.
func Main(demo Demo) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills at once (the default)
		// in case the graceful shutdown hangs.
		<-ctx.Done()
		stop()
	}()
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr, demo)
	stop()
	os.Exit(code)
}

// NoDemo is what `serve --demo` says in a build without the demo.
const NoDemo = "--demo: this refresher is the production build, which ships no demo " +
	"(it would link test code: an embedded Redis and a fake WeChat); " +
	"for the demo run `make run`, i.e. `go run ./cmd/refresher-demo serve --demo`"

// usage is the help text; demo is whether this build has serve --demo.
func usage(demo bool) string {
	serve, note := "[serve] [--config FILE] [--print-config]", ""
	if demo {
		serve = "[serve] [--config FILE] [--demo] [--print-config]"
		note = " serve --demo runs with an embedded Redis\nand a fake WeChat, no configuration needed."
	}
	return `usage:
  refresher ` + serve + ` [flags]
  refresher token APPID [--config FILE]
  refresher invalidate APPID TOKEN [--config FILE]
  refresher ticket APPID [jsapi|wx_card] [--config FILE]
  refresher status [--config FILE]
  refresher config [--config FILE]
  refresher health [--addr HOST:PORT] [--timeout 2s] [--config FILE]

Configuration: --config FILE (or TOKENKEEPER_CONFIG), then TOKENKEEPER_*
environment variables, then flags.` + note + `

flags:
`
}

// usageError is bad usage or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Run is Main without the process: it returns the exit code (0 ok,
// including a clean shutdown when ctx is done; 1 runtime error; 2 bad usage
// or configuration).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, demo Demo) int {
	err := dispatch(ctx, args, stdout, stderr, demo)
	if len(args) > 0 && args[0] == "health" {
		if err != nil && !errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintln(stderr, "refresher:", err)
		}
		return healthExit(err)
	}
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

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, runDemo Demo) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := pflag.NewFlagSet("refresher "+cmd, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage(runDemo != nil))
		fs.PrintDefaults()
	}
	configFile := fs.String("config", "", "YAML configuration file (env TOKENKEEPER_CONFIG)")
	config.RegisterFlags(fs)
	var demo, printConfig *bool
	if cmd == "serve" {
		if runDemo != nil {
			demo = fs.Bool("demo", false, "run with an embedded Redis and a fake WeChat (no configuration needed)")
		} else {
			// Known, so that it fails with NoDemo, but not offered.
			demo = fs.Bool("demo", false, "not in this build (see cmd/refresher-demo)")
			_ = fs.MarkHidden("demo")
		}
		printConfig = fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	}
	var healthAddr *string
	var healthTimeout *time.Duration
	if cmd == "health" {
		healthAddr, healthTimeout = healthFlags(fs)
	}
	switch cmd {
	case "serve", "token", "invalidate", "ticket", "status", "config", "health":
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
	want := map[string]int{"serve": 0, "token": 1, "invalidate": 2, "status": 0, "config": 0, "health": 0}[cmd]
	if cmd == "ticket" {
		if len(pos) == 1 {
			pos = append(pos, wechat.TicketJSAPI) // the kind defaults to jsapi
		}
		want = 2
	}
	if len(pos) != want {
		return usagef("%s takes %d argument(s), got %d: %q (see refresher --help)", cmd, want, len(pos), pos)
	}

	if cmd == "serve" && *demo {
		if runDemo == nil {
			return usagef("%s", NoDemo)
		}
		if *configFile != "" {
			return usagef("--demo and --config exclude each other: the demo brings its own configuration")
		}
		return runDemo(ctx, fs, *printConfig, stdout, stderr)
	}

	// The commands that only read Redis need only its settings: a secret
	// that does not resolve here (another host's secret file) must not
	// stop `status` or `token`.
	readOnly := cmd == "token" || cmd == "invalidate" || cmd == "status"
	opts := config.Options{File: *configFile, Flags: fs, ReadOnly: readOnly}
	if cmd == "health" {
		return health(ctx, opts, *healthAddr, *healthTimeout, stdout)
	}
	if cmd == "serve" && *configFile == "" && os.Getenv("TOKENKEEPER_CONFIG") == "" && os.Getenv("TOKENKEEPER_APPS") == "" {
		try := "`make run` (`go run ./cmd/refresher-demo serve --demo`)"
		if runDemo != nil {
			try = "`serve --demo`"
		}
		return usagef("no configuration: pass --config FILE (or set TOKENKEEPER_CONFIG / TOKENKEEPER_APPS and friends), or try %s for a self-contained demo", try)
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
	log := NewLogger(cfg, stderr)
	for _, name := range cfg.UnusedEnv {
		log.Warn("refresher: environment variable set but not read (a typo, or an app that is not listed?)", "var", name)
	}
	for _, w := range cfg.Warnings {
		log.Warn("refresher: configuration: " + w)
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
	case "ticket":
		if err := checkApp(cfg, pos[0]); err != nil {
			return err
		}
		if p := wechat.TicketKindProblem(pos[1]); p != "" {
			return usagef("ticket: %s", p)
		}
		return tokencmd.Ticket(ctx, cfg, pos[0], pos[1], stdout)
	case "status":
		return status.Print(ctx, cfg, stdout)
	}
	// SIGHUP reloads the configuration from where it was read: the same
	// file, environment, flags and secret files.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return Serve(ctx, cfg, log,
		refresher.WithReloader(func() (*config.Config, error) { return config.Load(opts) }),
		refresher.WithReloadSignal(hup))
}

// NewLogger is the logger the configuration asks for, writing to w.
func NewLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Log.Level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RefresherPkg is the refresher's import path, built when --refresher-bin
// is not given.
const RefresherPkg = "github.com/tokenkeeper/tokenkeeper/cmd/refresher"

// ChaosPkg is this tool's import path.
const ChaosPkg = "github.com/tokenkeeper/tokenkeeper/cmd/chaos"

// Main is the chaos command. It returns the exit code: 0 every invariant
// held, 1 one broke or the run failed, 2 bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "reader" {
		rc, err := ParseReaderFlags(args[1:], stderr)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		w := bufio.NewWriter(stdout)
		if err := RunReader(ctx, rc, w); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	d := DefaultConfig()
	cfg := Config{}
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Apps, "apps", d.Apps, "number of apps")
	fs.DurationVar(&cfg.Duration, "duration", d.Duration, "run length, from the readers' start")
	fs.DurationVar(&cfg.TokenLifetime, "token-lifetime", d.TokenLifetime, "the fake's token lifetime")
	fs.DurationVar(&cfg.Grace, "grace", d.Grace, "the fake's overlap after a new token (also tokencache's overlap)")
	fs.IntVar(&cfg.Readers, "readers", d.Readers, "reader processes")
	fs.IntVar(&cfg.Goroutines, "goroutines", d.Goroutines, "goroutines per reader")
	fs.DurationVar(&cfg.Interval, "interval", d.Interval, "pause between two business calls of one goroutine")
	fs.IntVar(&cfg.Replicas, "replicas", d.Replicas, "refresher replicas (0: readers only)")
	fs.IntVar(&cfg.GatewayGoroutines, "gateway-goroutines", d.GatewayGoroutines, "SDK-style goroutines per reader calling through the replicas' gateways (-1: none)")
	noFaults := fs.Bool("no-faults", false, "inject nothing: fetches must equal the ideal")
	fs.DurationVar(&cfg.StopFor, "stop-for", 0, "how long the fetch-lock holder stays frozen (default lock TTL + 1s)")
	fs.DurationVar(&cfg.RedisOutage, "redis-outage", d.RedisOutage, "how long Redis is paused")
	fs.DurationVar(&cfg.Cache.RefreshAhead, "refresh-ahead", d.Cache.RefreshAhead, "tokencache refresh ahead")
	fs.DurationVar(&cfg.Cache.Margin, "margin", d.Cache.Margin, "tokencache margin")
	fs.DurationVar(&cfg.Cache.NearMaxAge, "near-max-age", d.Cache.NearMaxAge, "tokencache near max age")
	fs.DurationVar(&cfg.Cache.LockTTL, "lock-ttl", d.Cache.LockTTL, "tokencache lock TTL")
	fs.DurationVar(&cfg.Cache.FetchTimeout, "fetch-timeout", d.Cache.FetchTimeout, "tokencache fetch timeout")
	fs.StringVar(&cfg.RefresherBin, "refresher-bin", "", "refresher binary (default: go build "+RefresherPkg+")")
	fs.StringVar(&cfg.RedisBin, "redis-bin", "", "redis-server binary (default: from PATH)")
	workDir := fs.String("work-dir", "", "where configs and logs go (default: a new temporary directory, kept)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chaos: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Faults = !*noFaults
	cfg.Log = stderr
	var err error
	if cfg.WorkDir = *workDir; cfg.WorkDir == "" {
		if cfg.WorkDir, err = os.MkdirTemp("", "chaos-"); err != nil {
			fmt.Fprintln(stderr, "chaos:", err)
			return 1
		}
	}
	if cfg.ReaderBin, err = os.Executable(); err != nil {
		fmt.Fprintln(stderr, "chaos: cannot find my own binary:", err)
		return 1
	}
	if cfg.Replicas > 0 && cfg.RefresherBin == "" {
		cfg.RefresherBin = filepath.Join(cfg.WorkDir, "refresher")
		fmt.Fprintf(stderr, "building %s into %s\n", RefresherPkg, cfg.RefresherBin)
		if err := BuildBinary(ctx, RefresherPkg, cfg.RefresherBin); err != nil {
			fmt.Fprintln(stderr, "chaos:", err, "(run from the module's directory, or pass --refresher-bin)")
			return 1
		}
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "chaos:", err)
			return 1
		}
	} else {
		rep.WriteText(stdout)
	}
	if len(rep.Violations) > 0 || rep.Interrupted {
		return 1
	}
	return 0
}

// BuildBinary runs "go build -o out pkg" (without -race, whatever the
// caller was built with: the children must be fast on a small machine).
func BuildBinary(ctx context.Context, pkg, out string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOFLAGS=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(string(msg)))
	}
	return nil
}

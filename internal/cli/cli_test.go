package cli

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

func run(t *testing.T, demo Demo, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, &out, &errOut, demo)
	return code, out.String(), errOut.String()
}

// TestNoDemo: without a Demo, serve --demo is bad usage that says where
// the demo is, whatever else is given, and the help does not offer it.
func TestNoDemo(t *testing.T) {
	for _, args := range [][]string{{"serve", "--demo"}, {"--demo", "--print-config"}, {"--demo", "--http-addr", "127.0.0.1:1"}} {
		code, out, errOut := run(t, nil, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, NoDemo) {
			t.Errorf("%v: code %d out %q err %q", args, code, out, errOut)
		}
	}
	if code, _, help := run(t, nil, "--help"); code != 0 || strings.Contains(help, "demo") {
		t.Errorf("help (code %d) offers the demo:\n%s", code, help)
	}
}

// TestDemoHook: with a Demo, serve --demo calls it with the parsed flags
// (so --http-addr applies to the demo's configuration) and --print-config,
// and --demo still excludes --config.
func TestDemoHook(t *testing.T) {
	var calls int
	var gotAddr string
	var gotPrint bool
	demo := func(_ context.Context, fs *pflag.FlagSet, printConfig bool, stdout, _ io.Writer) error {
		calls++
		cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte("apps: [{id: wx0123456789abcdef, secret: s}]\n"), Environ: []string{}, Flags: fs})
		if err != nil {
			return err
		}
		gotAddr, gotPrint = cfg.HTTP.Addr, printConfig
		_, err = io.WriteString(stdout, "demo ran")
		return err
	}
	code, out, errOut := run(t, demo, "serve", "--demo", "--http-addr", "127.0.0.1:9", "--print-config")
	if code != 0 || calls != 1 || out != "demo ran" || gotAddr != "127.0.0.1:9" || !gotPrint {
		t.Fatalf("code %d calls %d out %q err %q addr %q print %v", code, calls, out, errOut, gotAddr, gotPrint)
	}
	code, _, errOut = run(t, demo, "serve", "--demo", "--config", "x.yaml")
	if code != 2 || calls != 1 || !strings.Contains(errOut, "exclude each other") {
		t.Errorf("--demo --config: code %d calls %d err %q", code, calls, errOut)
	}
	if code, _, help := run(t, demo, "--help"); code != 0 || !strings.Contains(help, "--demo") {
		t.Errorf("help (code %d) lacks --demo:\n%s", code, help)
	}
}

// status and token need only the Redis settings: no app list, no secret.
func TestReadOnlyCommandsNeedOnlyRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	tok := tokencache.Token{Value: "stored-token-0123456789", Version: 1, Rev: 1,
		UsableUntil: time.Now().Add(time.Hour), RefreshAt: time.Now().Add(50 * time.Minute), ExpiresAt: time.Now().Add(61 * time.Minute), FetchedAt: time.Now()}
	mr.Set(tokencache.RecordKey("tokenkeeper:", "wx0123456789abcdef"), tokencache.EncodeRecord(tok))
	t.Setenv("TOKENKEEPER_REDIS_ADDRS", mr.Addr())
	if code, out, errOut := run(t, nil, "status"); code != 0 {
		t.Fatalf("status with the Redis settings only: code %d out %q err %q", code, out, errOut)
	}
	// An app whose secret file is on another host: listed, its token read.
	t.Setenv("TOKENKEEPER_APPS", "wx0123456789abcdef")
	t.Setenv("TOKENKEEPER_APPS_WX0123456789ABCDEF_SECRET_FILE", "/nonexistent/secret")
	if code, out, errOut := run(t, nil, "status"); code != 0 || !strings.Contains(out, "wx0123456789abcdef") {
		t.Fatalf("status: code %d out %q err %q", code, out, errOut)
	}
	code, out, errOut := run(t, nil, "token", "wx0123456789abcdef")
	if code != 0 || !strings.Contains(out, "stored-token-0123456789") {
		t.Fatalf("token: code %d out %q err %q", code, out, errOut)
	}
	// serve still needs every secret.
	if code, _, errOut := run(t, nil, "serve"); code != 2 || !strings.Contains(errOut, `"/nonexistent/secret"`) {
		t.Fatalf("serve: code %d err %q, want the unresolvable secret refused", code, errOut)
	}
}

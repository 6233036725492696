package cli

import (
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// TestHealthDefaultIsConfigDefault: without any configuration, health
// probes where serve listens by default.
func TestHealthDefaultIsConfigDefault(t *testing.T) {
	cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte("apps: [{id: wx0000000000000001, secret: s}]\n"), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != defaultHealthAddr {
		t.Fatalf("http.addr defaults to %s, health probes %s", cfg.HTTP.Addr, defaultHealthAddr)
	}
}

// TestHealthNeverExitsTwo: Docker reserves a healthcheck's exit code 2, so
// bad usage and a bad configuration exit 1 too, with the reason.
func TestHealthNeverExitsTwo(t *testing.T) {
	t.Setenv("TOKENKEEPER_APPS", "")
	t.Setenv("TOKENKEEPER_CONFIG", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"health", "--no-such-flag"}, "unknown flag"},
		{[]string{"health", "extra"}, "health takes 0 argument(s)"},
		{[]string{"health", "--addr", "nonsense"}, `address "nonsense" is not host:port`},
		{[]string{"health", "--config", "/nonexistent/tk.yaml"}, "the configuration gives no address to probe (pass --addr HOST:PORT)"},
		{[]string{"health", "--addr", "127.0.0.1:1", "--timeout", "0s"}, "must be positive"},
	} {
		code, out, errOut := run(t, nil, tc.args...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d out %q err %q; want 1 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if code, _, _ := run(t, nil, "health", "--help"); code != 0 {
		t.Errorf("health --help: code %d", code)
	}
}

package config_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// fakeSecrets answers every secret file with a long placeholder.
func fakeSecrets(string) ([]byte, error) { return []byte("placeholder-secret-0123456789\n"), nil }

// TestExampleConfigs loads every example in testdata/config (the repo's),
// so the documented examples cannot rot.
func TestExampleConfigs(t *testing.T) {
	env := []string{"WX_SECRET=x", "WX_FEDCBA_SECRET=y", "OPS_API_KEY=ops-key-0123456789abcdef", "GATEWAY_TEAM_A_KEY=gateway-key-team-a-0123"}
	for _, name := range []string{"minimal.yaml", "full.yaml"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "..", "testdata", "config", name)
			c, err := config.Load(config.Options{File: path, Environ: env, ReadFile: func(p string) ([]byte, error) {
				if p == path {
					return os.ReadFile(p)
				}
				return fakeSecrets(p)
			}})
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Apps) == 0 {
				t.Fatal("no apps")
			}
		})
	}
	t.Run("sentinel.env", func(t *testing.T) {
		f, err := os.Open(filepath.Join("..", "..", "testdata", "config", "sentinel.env"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var env []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
				env = append(env, line)
			}
		}
		c, err := config.Load(config.Options{Environ: env, ReadFile: fakeSecrets})
		if err != nil {
			t.Fatal(err)
		}
		if c.Redis.MasterName != "mymaster" || len(c.Apps) != 2 || len(c.UnusedEnv) != 0 {
			t.Fatalf("master %q apps %d unused %v", c.Redis.MasterName, len(c.Apps), c.UnusedEnv)
		}
	})
}

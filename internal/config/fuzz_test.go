package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// FuzzLoadConfig: whatever the YAML, Load returns either a valid
// configuration or an error, never panics, and never echoes a secret in its
// error. Seeds are in testdata/fuzz/FuzzLoadConfig.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte("apps: [{id: wx0000000000000001, secret: s}]\n"))
	f.Add([]byte("apps: 3\nredis: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		type result struct {
			c   *config.Config
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := config.Load(config.Options{File: "fuzz.yaml", YAML: data, Environ: []string{"WX2_SECRET=fuzz-env-secret"}, ReadFile: stdFiles})
			done <- result{c, err}
		}()
		var c *config.Config
		var err error
		select {
		case r := <-done:
			c, err = r.c, r.err
		case <-time.After(5 * time.Second):
			t.Fatalf("Load took over 5s on %d bytes of YAML", len(data))
		}
		if err != nil {
			if c != nil {
				t.Fatal("both a config and an error")
			}
			if strings.Contains(err.Error(), "fuzz-env-secret") || strings.Contains(err.Error(), "ops-key-from-file") {
				t.Fatalf("error leaks a secret: %v", err)
			}
			// Load recovers from a panic in the YAML or decoding libraries;
			// the fuzzer should still find and report such input.
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("a library panicked: %v", err)
			}
			var cerr *config.Error
			if errors.As(err, &cerr) && len(cerr.Problems) == 0 {
				t.Fatal("validation error with no problem")
			}
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("Load returned a config that Validate refuses: %v", verr)
		}
		if len(c.Apps) == 0 || len(c.Redis.Addrs) == 0 || c.Lease.Duration <= c.Lease.RenewDeadline {
			t.Fatalf("Load accepted an invalid config: %+v", c)
		}
	})
}

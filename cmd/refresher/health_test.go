package main

import (
	"net"
	"strings"
	"testing"
)

// TestHealthCommand runs `refresher health` (the compose healthcheck)
// against a real replica: ready by its configuration or by --addr alone,
// not ready with the replica's reason once Redis is gone, and nothing
// listening is told apart. Every failure exits 1, none prints a secret.
func TestHealthCommand(t *testing.T) {
	f := oneReplica(t)
	var printed strings.Builder
	runBin := func(t *testing.T, env []string, args ...string) (int, string, string) {
		code, out, errOut := runBin(t, env, args...)
		printed.WriteString(out + errOut)
		return code, out, errOut
	}
	want := "ready: GET http://" + f.addrs[0] + "/readyz: 200 OK\n"
	for _, args := range [][]string{{"health", "--config", f.configs[0]}, {"health", "--addr", f.addrs[0]}} {
		if code, out, errOut := runBin(t, baseEnv(), args...); code != 0 || out != want || errOut != "" {
			t.Errorf("%v on a ready replica: code %d out %q err %q", args, code, out, errOut)
		}
	}
	// The configuration's address is used (the wildcard form becomes
	// loopback): TOKENKEEPER_ variables as in a container.
	_, port, _ := net.SplitHostPort(f.addrs[0])
	env := baseEnv("TOKENKEEPER_CONFIG="+f.configs[0], "TOKENKEEPER_HTTP_ADDR=0.0.0.0:"+port)
	if code, out, errOut := runBin(t, env, "health"); code != 0 || out != "ready: GET http://127.0.0.1:"+port+"/readyz: 200 OK\n" {
		t.Errorf("health from the environment: code %d out %q err %q", code, out, errOut)
	}

	f.redis.Stop()
	code, out, errOut := runBin(t, baseEnv(), "health", "--addr", f.addrs[0])
	if code != 1 || out != "" || !strings.Contains(errOut, "refresher: health: not ready: GET http://"+f.addrs[0]+"/readyz: 503 Service Unavailable: \"not ready: redis unreachable") {
		t.Errorf("health without Redis: code %d out %q err %q", code, out, errOut)
	}

	closed := freeAddr(t)
	code, _, errOut = runBin(t, baseEnv(), "health", "--addr", closed)
	if code != 1 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("health with nothing listening: code %d err %q", code, errOut)
	}
	code, _, errOut = runBin(t, baseEnv(), "health", "--config", f.configs[0], "--bogus")
	if code != 1 || !strings.Contains(errOut, "unknown flag: --bogus") {
		t.Errorf("health with a bad flag: code %d err %q", code, errOut)
	}
	for _, s := range []string{"secret-a-", "secret-b-", testAPIKey} {
		if strings.Contains(printed.String(), s) {
			t.Errorf("health printed %q", s[:10])
		}
	}
}

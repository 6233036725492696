package main

import (
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// oneReplica starts a fleet of one and waits until it is ready. Its
// tokens live a minute, so no scheduled refresh interferes with the
// test's own counts.
func oneReplica(t *testing.T) *fleet {
	t.Helper()
	f := newFleet(t, 1, time.Minute)
	f.start(0)
	if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool { return httpStatus(f.url(0, "/readyz")) == http.StatusOK }) {
		t.Fatal("replica not ready within 10s")
	}
	return f
}

// TestBinaryHTTPAPI checks auth, token and invalidate through the real
// binary (the routes' details are internal/httpapi's tests).
func TestBinaryHTTPAPI(t *testing.T) {
	f := oneReplica(t)
	tokenURL := f.url(0, "/v1/apps/wxa/token")

	for _, tc := range []struct {
		name, url, key string
		want           int
	}{
		{"no key", tokenURL, "", http.StatusUnauthorized},
		{"wrong key", tokenURL, "not-the-key-0123456789", http.StatusUnauthorized},
		{"key without the app", f.url(0, "/v1/apps/wxb/token"), testNarrowKey, http.StatusForbidden},
		{"unknown app", f.url(0, "/v1/apps/wxzzz/token"), testAPIKey, http.StatusNotFound},
		{"narrow key, its app", tokenURL, testNarrowKey, http.StatusOK},
	} {
		code, _, err := call(http.MethodGet, tc.url, tc.key, "")
		if err != nil || code != tc.want {
			t.Errorf("%s: got %d %v, want %d", tc.name, code, err, tc.want)
		}
	}

	code, tok, err := call(http.MethodGet, tokenURL, testAPIKey, "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET token: %d %v", code, err)
	}
	if tok.AccessToken != f.fake.CurrentToken("wxa") || tok.Version != 1 || tok.ExpiresIn <= 50 || tok.ExpiresIn > 59 {
		t.Fatalf("token reply %+v; fake's current token differs or times are off", tok)
	}
	if st := f.fake.TokenState("wxa", tok.AccessToken); st != wechattest.Live {
		t.Fatalf("served token is %v at the fake", st)
	}

	// The CLI reads the same token from Redis.
	code, out, errOut := runBin(t, baseEnv(), "token", "wxa", "--config", f.configs[0])
	var cli tokenReply
	if code != 0 || json.Unmarshal([]byte(out), &cli) != nil || cli.AccessToken != tok.AccessToken {
		t.Fatalf("refresher token: code %d out %q err %q", code, out, errOut)
	}

	// Passive refresh: reporting the current token fetches a new one...
	mintedBefore := f.fake.Stats("wxa").Minted
	body := `{"access_token":"` + tok.AccessToken + `"}`
	f.fake.Revoke("wxa", tok.AccessToken)
	code, fresh, err := call(http.MethodPost, f.url(0, "/v1/apps/wxa/invalidate"), testAPIKey, body)
	if err != nil || code != http.StatusOK || fresh.AccessToken == tok.AccessToken || fresh.Version <= tok.Version {
		t.Fatalf("invalidate current: %d %v %+v", code, err, fresh)
	}
	if got := f.fake.Stats("wxa").Minted; got != mintedBefore+1 {
		t.Errorf("invalidate minted %d tokens, want 1", got-mintedBefore)
	}
	// ...reporting it again (already replaced) fetches nothing, via the CLI too.
	code, out, errOut = runBin(t, baseEnv(), "invalidate", "wxa", tok.AccessToken, "--config", f.configs[0])
	var again tokenReply
	if code != 0 || json.Unmarshal([]byte(out), &again) != nil || again.AccessToken != fresh.AccessToken {
		t.Fatalf("refresher invalidate (stale): code %d out %q err %q", code, out, errOut)
	}
	if got := f.fake.Stats("wxa").Minted; got != mintedBefore+1 {
		t.Errorf("a stale report minted a token (%d in all, want %d)", got, mintedBefore+1)
	}

	// No secret or token in the replica's logs.
	logs := f.procs[0].stderr.String()
	for _, s := range []string{tok.AccessToken, fresh.AccessToken, "secret-a-", "secret-b-", testAPIKey} {
		if strings.Contains(logs, s) {
			t.Errorf("replica log contains %q", s[:min(len(s), 12)])
		}
	}

	code, out, _ = runBin(t, baseEnv(), "status", "--config", f.configs[0])
	if code != 0 || !regexp.MustCompile(`wxa\s+classic\s+[0-9a-f]{8}\s+\d+\s+\S+\s+ok .* by r1`).MatchString(out) {
		t.Errorf("status lacks wxa's fingerprint or last fetch:\n%s", out)
	}

	// SIGINT: clean exit 0, the lease released at once.
	f.procs[0].signal(t, syscall.SIGINT)
	if code := f.procs[0].wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code after SIGINT %d, want 0", code)
	}
	if l := f.leader(); l != "" {
		t.Errorf("lease still held by %q after a clean shutdown", l)
	}
}

func TestServeWithoutConfigFails(t *testing.T) {
	code, _, errOut := runBin(t, baseEnv(), "serve")
	if code != 2 || !strings.Contains(errOut, "--config") || !strings.Contains(errOut, "`make run` (`go run ./cmd/refresher-demo serve --demo`)") {
		t.Fatalf("code %d, stderr %q: want 2 and a hint at --config and at the demo binary", code, errOut)
	}
	code, _, errOut = runBin(t, baseEnv()) // serve is the default
	if code != 2 || !strings.Contains(errOut, "cmd/refresher-demo serve --demo") {
		t.Fatalf("no arguments: code %d, stderr %q", code, errOut)
	}
	// The demo binary's hint is its own --demo.
	code, _, errOut = runBinary(t, demoBinPath, baseEnv(), "serve")
	if code != 2 || !strings.Contains(errOut, "try `serve --demo`") {
		t.Fatalf("demo binary: code %d, stderr %q", code, errOut)
	}
}

// TestProductionHasNoDemo: the production binary knows --demo only to say
// where the demo is, and does not offer it in its help.
func TestProductionHasNoDemo(t *testing.T) {
	for _, args := range [][]string{{"serve", "--demo"}, {"--demo"}, {"serve", "--demo", "--print-config"}} {
		code, out, errOut := runBin(t, baseEnv(), args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "production build") || !strings.Contains(errOut, "make run") ||
			!strings.Contains(errOut, "go run ./cmd/refresher-demo serve --demo") {
			t.Errorf("%v: code %d stdout %q stderr %q: want 2 and how to get the demo", args, code, out, errOut)
		}
	}
	code, _, help := runBin(t, baseEnv(), "serve", "--help")
	if code != 0 || strings.Contains(help, "demo") {
		t.Errorf("production help (code %d) offers the demo:\n%s", code, help)
	}
	code, _, help = runBinary(t, demoBinPath, baseEnv(), "serve", "--help")
	if code != 0 || !strings.Contains(help, "--demo") {
		t.Errorf("demo binary's help (code %d) lacks --demo:\n%s", code, help)
	}
}

func TestBadUsageAndConfigExitTwo(t *testing.T) {
	f := newFleet(t, 1, time.Minute)
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{[]string{"token"}, nil, "token takes 1 argument"},
		{[]string{"token", "wxnope", "--config", f.configs[0]}, nil, `unknown app "wxnope"`},
		{[]string{"serve", "--config", f.configs[0], "--log-level", "loud"}, nil, "log.level"},
		{[]string{"serve"}, []string{"TOKENKEEPER_APPS=wx1", "TOKENKEEPER_APPS_WX1_SECRET=s", "TOKENKEEPER_LEASE_DURATION=1s"}, "lease.duration"},
	} {
		code, _, errOut := runBin(t, baseEnv(tc.env...), tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d stderr %q, want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestPrintConfigRedacts(t *testing.T) {
	env := baseEnv("TOKENKEEPER_APPS=wx0123456789abcdef:stable", "TOKENKEEPER_APPS_WX0123456789ABCDEF_SECRET=very-secret-value",
		"TOKENKEEPER_REDIS_PASSWORD=redis-password-value",
		"TOKENKEEPER_HTTP_API_KEYS=k", "TOKENKEEPER_HTTP_API_KEYS_K_KEY=api-key-value-0123456789", "TOKENKEEPER_HTTP_API_KEYS_K_APPS=*")
	for _, args := range [][]string{{"serve", "--print-config"}, {"config"}} {
		code, out, errOut := runBin(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: code %d: %s", args, code, errOut)
		}
		for _, s := range []string{"very-secret-value", "redis-password-value", "api-key-value"} {
			if strings.Contains(out+errOut, s) {
				t.Errorf("%v printed a secret:\n%s", args, out)
			}
		}
		if !strings.Contains(out, "[redacted] (env TOKENKEEPER_APPS_WX0123456789ABCDEF_SECRET)") || !strings.Contains(out, "mode: stable") {
			t.Errorf("%v output:\n%s", args, out)
		}
	}
}

// TestDemo runs `serve --demo` of the demo binary as a newcomer would
// (`make run`) and reads a token with the printed API key.
func TestDemo(t *testing.T) {
	addr := freeAddr(t)
	p := startBin(t, demoBinPath, "demo", baseEnv(), "serve", "--demo", "--http-addr", addr)
	var key string
	keyRE := regexp.MustCompile(`API key: (\S+)`)
	if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool {
		m := keyRE.FindStringSubmatch(p.stdout.String())
		if m != nil {
			key = m[1]
		}
		return key != ""
	}) {
		t.Fatalf("demo printed no API key:\n%s\n%s", p.stdout.String(), p.stderr.String())
	}
	out := p.stdout.String()
	for _, want := range []string{"curl -s -H 'Authorization: Bearer " + key + "' http://" + addr + "/v1/apps/wxdemo1/token", "/invalidate", "/metrics", "refresher status"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo instructions lack %q:\n%s", want, out)
		}
	}
	var tok tokenReply
	if !pollUntil(10*time.Second, 50*time.Millisecond, func() bool {
		code, tr, err := call(http.MethodGet, "http://"+addr+"/v1/apps/wxdemo2/token", key, "")
		tok = tr
		return err == nil && code == http.StatusOK
	}) {
		t.Fatalf("demo served no token: %+v", tok)
	}
	if tok.AccessToken == "" || tok.ExpiresIn <= 0 {
		t.Fatalf("demo token %+v", tok)
	}
	if !pollUntil(5*time.Second, 20*time.Millisecond, func() bool {
		return strings.Count(p.stderr.String(), "fetched and stored a new token") >= 2
	}) {
		t.Errorf("demo logs do not show both apps' first fetch:\n%s", p.stderr.String())
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("demo exit code %d after SIGTERM", code)
	}
}

func TestDemoPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, errOut := runBinary(t, demoBinPath, baseEnv(), "serve", "--demo", "--http-addr", ln.Addr().String())
	if code != 1 || !strings.Contains(errOut, ln.Addr().String()+" is already in use") || !strings.Contains(errOut, "--http-addr") {
		t.Fatalf("code %d stderr %q: want 1 and a clear 'already in use' message", code, errOut)
	}
}

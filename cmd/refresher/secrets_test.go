package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// leakYAML configures one replica with three apps whose secrets come from
// the three sources (inline, file, environment), two API keys (inline,
// environment) and a Redis password (file). wxbad's configured secret is
// one the fake refuses (40125).
const leakYAML = `
identity: leaky
redis:
  addrs: [%q]
  password_file: %q
wechat:
  base_url: %q
  timeout: 2s
apps:
  - {id: wxs1, secret: %q, mode: classic}
  - {id: wxs2, secret_file: %q, mode: stable}
  - {id: wxbad, secret_env: WXBAD_SECRET, mode: classic}
cache:
  key_prefix: "leak:"
  refresh_ahead: 2s
  margin: 1s
  overlap: 3s
  near_max_age: 500ms
  lock_ttl: 2s
  fetch_timeout: 1s
lease:
  name: "leak:leader"
  duration: 2s
  renew_deadline: 1200ms
  retry_period: 300ms
http:
  addr: %q
  invalidate_rate: 100
  api_keys:
    - {name: all, key: %q, apps: ["*"]}
    - {name: narrow, key_env: NARROW_KEY, apps: [wxs1]}
log:
  level: debug
  format: text
`

// leakHunt collects everything the system under test printed, answered or
// stored, each piece under a name that says where it came from.
type leakHunt struct {
	t       *testing.T
	mu      sync.Mutex
	outputs []evidence // scanned for secrets
	logs    []evidence // scanned for secrets and whole tokens
	tokens  map[string]bool
}

type evidence struct{ where, text string }

func (h *leakHunt) output(where, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.outputs = append(h.outputs, evidence{where, text})
}

// log records text in which a whole token must not appear either.
func (h *leakHunt) log(where, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, evidence{where, text})
}

func (h *leakHunt) token(values ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range values {
		if v != "" {
			h.tokens[v] = true
		}
	}
}

// fragments are the pieces of s a partial leak would show: every window
// of n bytes starting at a multiple of step (step 1 = every window).
func fragments(s string, n, step int) []string {
	if len(s) <= n {
		return []string{s}
	}
	var out []string
	for i := 0; i+n <= len(s); i += step {
		out = append(out, s[i:i+n])
	}
	return out
}

// findLeaks reports each named needle found in ev, with the surrounding
// text and the needle itself masked, so the report does not leak either.
func findLeaks(ev []evidence, needles map[string]string, n, step int) []string {
	var found []string
	for _, e := range ev {
		for name, secret := range needles {
			for _, frag := range fragments(secret, n, step) {
				i := strings.Index(e.text, frag)
				if i < 0 {
					continue
				}
				ctx := e.text[max(0, i-80):min(len(e.text), i+len(frag)+80)]
				ctx = strings.ReplaceAll(ctx, frag, "<"+name+">")
				found = append(found, fmt.Sprintf("%s holds %s (a %d-byte fragment at least): ...%s...", e.where, name, len(frag), ctx))
				break
			}
		}
	}
	return found
}

func distinctive(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// httpExchange is one request to the replica: what was asked, and the
// whole answer (status line, headers, body).
type httpExchange struct {
	desc string
	code int
	dump string // headers and body
	body string
}

func (h *leakHunt) do(base, desc, method, path string, header map[string]string, body string) httpExchange {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s: %v", desc, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	var hdr strings.Builder
	_ = resp.Header.Write(&hdr)
	x := httpExchange{desc: desc, code: resp.StatusCode, body: string(data), dump: resp.Status + "\n" + hdr.String() + "\n" + string(data)}
	where := fmt.Sprintf("HTTP %s %s (%s) → %d", method, path, desc, resp.StatusCode)
	if resp.StatusCode == http.StatusOK && strings.Contains(path, "/v1/apps/") {
		// A token answer holds the token by design.
		var tr tokenReply
		if json.Unmarshal(data, &tr) == nil {
			h.token(tr.AccessToken)
		}
		h.output(where, x.dump)
	} else {
		h.log(where, x.dump)
	}
	return x
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

func jsonBody(key string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"}
}

// monitorRedis records every command any client sends to addr (MONITOR),
// so a secret sent to Redis is caught even if it is never stored or has
// expired by the time the keys are read. The transcript is complete once
// the returned stop has been called.
func monitorRedis(t *testing.T, addr, password string) (stop func() string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	for _, cmd := range [][]string{{"AUTH", password}, {"MONITOR"}} {
		req := fmt.Sprintf("*%d\r\n", len(cmd))
		for _, arg := range cmd {
			req += fmt.Sprintf("$%d\r\n%s\r\n", len(arg), arg)
		}
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if line, err := rd.ReadString('\n'); err != nil || line != "+OK\r\n" {
			t.Fatalf("%s: %q %v", cmd[0], line, err)
		}
	}
	var sb strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			line, err := rd.ReadString('\n')
			sb.WriteString(line)
			if err != nil {
				return
			}
		}
	}()
	var once sync.Once
	stop = func() string {
		once.Do(func() {
			conn.Close()
			<-done
		})
		return sb.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// dumpRedis reads every key and its value, whatever its type.
func dumpRedis(t *testing.T, c *redis.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sb strings.Builder
	var cursor uint64
	for range 10000 { // bounded: a few keys per app
		keys, next, err := c.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			typ, err := c.Type(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			var val any
			switch typ {
			case "string":
				val, err = c.Get(ctx, k).Result()
			case "hash":
				val, err = c.HGetAll(ctx, k).Result()
			case "zset":
				val, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
			case "list":
				val, err = c.LRange(ctx, k, 0, -1).Result()
			case "set":
				val, err = c.SMembers(ctx, k).Result()
			case "stream":
				val, err = c.XRange(ctx, k, "-", "+").Result()
			case "none": // expired meanwhile
			default:
				t.Fatalf("key %q has type %s, which the leak scan cannot read", k, typ)
			}
			if err != nil && err != redis.Nil {
				t.Fatalf("reading %s key %q: %v", typ, k, err)
			}
			fmt.Fprintf(&sb, "%s (%s) = %v\n", k, typ, val)
		}
		cursor = next
		if cursor == 0 {
			break
		}
	}
	return sb.String()
}

// TestSecretsNeverLeak runs a real replica and the CLI through every path
// that could print a secret (fetches that succeed, a secret WeChat refuses,
// upstream faults, bad requests and keys, status, token, print-config, bad
// configurations) and then scans all they printed, answered and stored:
// no AppSecret and no API key may appear anywhere, not even a 12-byte
// fragment, and no whole token (or 24-byte fragment of one) in any log,
// error answer or metric.
func TestSecretsNeverLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("process test (about 15 s)")
	}
	h := &leakHunt{t: t, tokens: map[string]bool{}}
	secret1, secret2 := distinctive("wxs1SECRET"), distinctive("wxs2SECRET")
	badSecret, realBadSecret := distinctive("wxbadCONFIGURED"), distinctive("wxbadREAL")
	apiKey, narrowKey := distinctive("apikeyALL-"), distinctive("apikeyNARROW-")
	redisPassword, wrongRedisPassword := distinctive("redisPASSWORD-"), distinctive("wrongREDISPASSWORD-")
	secrets := map[string]string{
		"wxs1 secret (inline)": secret1, "wxs2 secret (file)": secret2, "wxbad secret (env)": badSecret,
		"wxbad real secret": realBadSecret, "API key (inline)": apiKey, "narrow API key (env)": narrowKey,
		"Redis password (file)": redisPassword, "wrong Redis password (env)": wrongRedisPassword,
	}

	// redistest starts redis-server without a password; it gets one at
	// once, before anything else connects.
	rs := redistest.Start(t)
	ctx := context.Background()
	if err := rs.Client().ConfigSet(ctx, "requirepass", redisPassword).Err(); err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(&redis.Options{Addr: rs.Addr(), Password: redisPassword})
	defer client.Close()
	stopMonitor := monitorRedis(t, rs.Addr(), redisPassword)
	fake := wechattest.New(t, wechattest.WithApp("wxs1", secret1), wechattest.WithApp("wxs2", secret2),
		wechattest.WithApp("wxbad", realBadSecret), wechattest.WithLifetime(time.Minute), wechattest.WithGrace(testGrace))
	snapshotTokens := func() { h.token(fake.CurrentToken("wxs1"), fake.CurrentStableToken("wxs2")) }

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "wxs2.secret")
	if err := os.WriteFile(secretFile, []byte(secret2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	passwordFile := filepath.Join(dir, "redis.password")
	if err := os.WriteFile(passwordFile, []byte(redisPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "leaky.yaml")
	yaml := fmt.Sprintf(leakYAML, rs.Addr(), passwordFile, fake.URL(), secret1, secretFile, addr, apiKey)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv("WXBAD_SECRET="+badSecret, "NARROW_KEY="+narrowKey)
	base := "http://" + addr

	// cli runs the binary and files its output: stdout holds the token
	// by design only for token and invalidate.
	cli := func(wantCode int, args ...string) (stdout, stderr string) {
		t.Helper()
		code, out, errOut := runBin(t, env, args...)
		where := "refresher " + strings.Join(args, " ")
		for name, s := range secrets {
			where = strings.ReplaceAll(where, s, "<"+name+">")
		}
		if wantCode >= 0 && code != wantCode {
			t.Errorf("%s: exit code %d, want %d; stderr %q", where, code, wantCode, errOut)
		}
		h.log(where+" (stderr)", errOut)
		if len(args) > 0 && (args[0] == "token" || args[0] == "invalidate") {
			var tr tokenReply
			if json.Unmarshal([]byte(out), &tr) == nil {
				h.token(tr.AccessToken)
			}
			h.output(where+" (stdout)", out)
		} else {
			h.log(where+" (stdout)", out)
		}
		return out, errOut
	}

	replica := startProc(t, "leaky", env, "serve", "--config", cfgPath)
	if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool { return httpStatus(base+"/readyz") == http.StatusOK }) {
		t.Fatal("replica not ready within 10s")
	}
	// The leader's scheduler fetches every app at once; wxbad's secret is
	// refused.
	if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool {
		return fake.Stats("wxbad").Refused >= 1 && fake.Stats("wxs1").Minted >= 1 && fake.Stats("wxs2").Minted >= 1
	}) {
		t.Fatalf("scheduler did not fetch every app: wxs1 %+v wxs2 %+v wxbad %+v", fake.Stats("wxs1"), fake.Stats("wxs2"), fake.Stats("wxbad"))
	}
	snapshotTokens()

	// Successful reads, and reads refused for want of a (right) key.
	cur1 := h.do(base, "all key", "GET", "/v1/apps/wxs1/token", bearer(apiKey), "")
	h.do(base, "all key", "GET", "/v1/apps/wxs2/token", bearer(apiKey), "")
	h.do(base, "narrow key, its app", "GET", "/v1/apps/wxs1/token", bearer(narrowKey), "")
	h.do(base, "narrow key, another app", "GET", "/v1/apps/wxs2/token", bearer(narrowKey), "")
	h.do(base, "refused secret", "GET", "/v1/apps/wxbad/token", bearer(apiKey), "")
	h.do(base, "no key", "GET", "/v1/apps/wxs1/token", nil, "")
	h.do(base, "an AppSecret as the key", "GET", "/v1/apps/wxs1/token", bearer(secret1), "")
	h.do(base, "key plus a byte", "GET", "/v1/apps/wxs1/token", bearer(apiKey+"x"), "")
	h.do(base, "key less a byte", "GET", "/v1/apps/wxs1/token", bearer(apiKey[:len(apiKey)-1]), "")
	h.do(base, "key in Basic auth", "GET", "/v1/apps/wxs1/token",
		map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("all:"+apiKey))}, "")
	h.do(base, "key without Bearer", "GET", "/v1/apps/wxs1/token", map[string]string{"Authorization": apiKey}, "")
	h.do(base, "wrong method", "PUT", "/v1/apps/wxs1/token", bearer(apiKey), "")
	var tok1 tokenReply
	if cur1.code != http.StatusOK || json.Unmarshal([]byte(cur1.body), &tok1) != nil {
		t.Fatalf("GET wxs1 token: %d %s", cur1.code, cur1.body)
	}

	// Invalidate: good, stale, bad and hostile bodies; wrong keys.
	fake.Revoke("wxs1", tok1.AccessToken)
	h.do(base, "current token", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":"`+tok1.AccessToken+`"}`)
	h.do(base, "stale token", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":"`+tok1.AccessToken+`"}`)
	h.do(base, "an AppSecret as the token", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":"`+secret1+`"}`)
	h.do(base, "truncated JSON", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":`)
	h.do(base, "unknown field", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":"x","appsecret":"`+secret2+`"}`)
	h.do(base, "empty token", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":""}`)
	h.do(base, "oversized", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey), `{"access_token":"`+strings.Repeat(secret1, 200)+`"}`)
	h.do(base, "not JSON", "POST", "/v1/apps/wxs1/invalidate", map[string]string{"Authorization": "Bearer " + apiKey, "Content-Type": "text/plain"}, secret2)
	h.do(base, "wrong key", "POST", "/v1/apps/wxs1/invalidate", jsonBody(apiKey+"x"), `{"access_token":"x"}`)
	h.do(base, "narrow key, another app", "POST", "/v1/apps/wxs2/invalidate", jsonBody(narrowKey), `{"access_token":"x"}`)
	h.do(base, "refused secret", "POST", "/v1/apps/wxbad/invalidate", jsonBody(apiKey), `{"access_token":"x"}`)
	h.do(base, "wrong method", "GET", "/v1/apps/wxs1/invalidate", bearer(apiKey), "")
	snapshotTokens()

	// Upstream faults on both endpoints. Each is injected, then passive
	// refreshes are asked for until a fetch has met it (a fetch may be
	// held back for a second or two after the previous failure).
	for _, f := range []wechattest.Fault{
		{Kind: wechattest.FaultHTML502, AppID: "wxs1"},
		{Kind: wechattest.FaultLostReply, AppID: "wxs1"},
		{Kind: wechattest.FaultBusy, AppID: "wxs1"},
		{Kind: wechattest.FaultHTML502, AppID: "wxs2"},
		{Kind: wechattest.FaultLostReply, AppID: "wxs2"},
		{Kind: wechattest.FaultBusy, AppID: "wxs2"},
	} {
		fake.InjectFault(f)
		path := "/v1/apps/" + f.AppID
		if !pollUntil(20*time.Second, 100*time.Millisecond, func() bool {
			x := h.do(base, "before fault "+f.Kind.String(), "GET", path+"/token", bearer(apiKey), "")
			var tr tokenReply
			_ = json.Unmarshal([]byte(x.body), &tr)
			fake.Revoke(f.AppID, tr.AccessToken) // a report of a live token costs no fetch
			h.do(base, "fault "+f.Kind.String(), "POST", path+"/invalidate", jsonBody(apiKey), `{"access_token":"`+tr.AccessToken+`"}`)
			snapshotTokens()
			return fake.PendingFaults() == 0
		}) {
			t.Fatalf("fault %v on %s never met by a fetch", f.Kind, f.AppID)
		}
	}

	// The CLI, against the same Redis and fake.
	cli(0, "status", "--config", cfgPath)
	// A wrong Redis password (from the environment this time).
	wrongPath := filepath.Join(dir, "wrong-password.yaml")
	wrongYAML := strings.Replace(yaml, "password_file: "+fmt.Sprintf("%q", passwordFile), "password_env: WRONG_REDIS_PASSWORD", 1)
	if wrongYAML == yaml {
		t.Fatal("could not swap the Redis password source")
	}
	if err := os.WriteFile(wrongPath, []byte(wrongYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	func() {
		saved := env
		defer func() { env = saved }()
		env = append(append([]string{}, env...), "WRONG_REDIS_PASSWORD="+wrongRedisPassword)
		if out, errOut := cli(1, "status", "--config", wrongPath); out != "" || !strings.Contains(errOut, "WRONGPASS") {
			t.Errorf("status with a wrong Redis password: stdout %q, stderr %q; want only a WRONGPASS error", out, errOut)
		}
		cli(0, "config", "--config", wrongPath)
	}()
	cli(0, "token", "wxs1", "--config", cfgPath)
	cli(0, "token", "wxs2", "--config", cfgPath)
	cli(1, "token", "wxbad", "--config", cfgPath)
	cli(1, "invalidate", "wxbad", "some-token", "--config", cfgPath)
	cli(0, "invalidate", "wxs1", secret1, "--config", cfgPath) // not the current token: answered with it
	cli(0, "serve", "--print-config", "--config", cfgPath)
	cli(0, "config", "--config", cfgPath)
	fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultHTML502, AppID: "wxs1"})
	for i := 0; i < 20 && fake.PendingFaults() > 0; i++ {
		out, _ := cli(-1, "token", "wxs1", "--config", cfgPath)
		var tr tokenReply
		_ = json.Unmarshal([]byte(out), &tr)
		fake.Revoke("wxs1", tr.AccessToken)
		cli(-1, "invalidate", "wxs1", tr.AccessToken, "--config", cfgPath)
		snapshotTokens()
	}
	if fake.PendingFaults() > 0 {
		t.Error("the CLI's invalidate never met the injected fault")
	}
	cli(0, "status", "--config", cfgPath)

	// Configurations that are wrong with a secret nearby: the errors must
	// not show it. misplaced ones put a secret where a non-secret value
	// belongs (a mode, a duration, a variable name, a file path, a key
	// name): internal/config echoes such values to say what is wrong, so
	// they are checked apart (see the subtest below).
	var misplaced []evidence
	for i, bad := range []struct {
		yaml      string
		env       []string
		flags     []string
		misplaced bool
	}{
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: %q, mode: turbo}]", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: 'wx s1!', secret: %q}]", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: %q, secret_env: WXBAD_SECRET}]", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: [%q]}]", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: {value: %q}}]", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secert: %q}]", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: \"%s\n  mode: classic", secret1)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: x}]\nhttp: {api_keys: [{name: a, key: %q, apps: ['*']}, {name: b, key: %q, apps: ['*']}]}", apiKey, apiKey)},
		{yaml: fmt.Sprintf("apps: [{id: wxs1, secret: x}]\nhttp: {api_keys: [{name: a, key: %q, apps: [wxnope]}]}", apiKey)},
		{yaml: "apps: [{id: wxs1, secret: x}]", env: []string{"TOKENKEEPER_APPS_WXS1_SECRET=" + secret1, "TOKENKEEPER_APPS_WXS1_SECRET_FILE=/nonexistent"}},
		{yaml: "apps: [{id: wxs1, secret: x}]", env: []string{"TOKENKEEPER_APPS=wxs1", "TOKENKEEPER_APPS_WXS1_SECRET=" + secret1, "TOKENKEEPER_APPS_WXS1_MODE=turbo"}},
		{yaml: "apps: [{id: wxs1, secret: x}]", env: []string{"TOKENKEEPER_HTTP_API_KEYS=k", "TOKENKEEPER_HTTP_API_KEYS_K_KEY=" + apiKey}},

		{misplaced: true, yaml: fmt.Sprintf("apps: [{id: wxs1, secret_env: %q}]", secret1)},
		{misplaced: true, yaml: fmt.Sprintf("apps: [{id: wxs1, secret_file: %q}]", secret1)},
		{misplaced: true, yaml: fmt.Sprintf("apps: [{id: wxs1, secret: x, mode: %q}]", secret1)},
		{misplaced: true, yaml: fmt.Sprintf("%s: 1\napps: [{id: wxs1, secret: x}]", secret1)},
		{misplaced: true, yaml: fmt.Sprintf("apps: [{id: wxs1, secret: x}]\ncache: {lock_ttl: %s, daily_budget: %s}", secret1, secret2)},
		{misplaced: true, yaml: "apps: [{id: wxs1, secret: x}]", env: []string{"TOKENKEEPER_CACHE_DAILY_BUDGET=" + secret1, "TOKENKEEPER_LEASE_DURATION=" + secret2}},
		{misplaced: true, yaml: "apps: [{id: wxs1, secret: x}]", flags: []string{"--log-level", secret1}},
	} {
		path := filepath.Join(dir, fmt.Sprintf("bad%d.yaml", i))
		if err := os.WriteFile(path, []byte(bad.yaml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"serve", "--config", path}, {"config", "--config", path}} {
			args = append(args, bad.flags...)
			code, out, errOut := runBin(t, baseEnv(bad.env...), args...)
			if code != 2 {
				t.Errorf("bad config %d: %s: exit code %d, want 2; stderr %q", i, args[0], code, errOut)
			}
			ev := evidence{fmt.Sprintf("bad config %d: refresher %s (stdout+stderr)", i, args[0]), out + errOut}
			if bad.misplaced {
				misplaced = append(misplaced, ev)
			} else {
				h.log(ev.where, ev.text)
			}
		}
	}

	// Scrape what a Prometheus server would, then stop the replica.
	metricsText := httpBody(base + "/metrics")
	if !strings.Contains(metricsText, `tokenkeeper_`) || !strings.Contains(metricsText, `app="wxbad"`) {
		t.Errorf("metrics lack the per-app series:\n%.2000s", metricsText)
	}
	h.log("GET /metrics", metricsText)
	replica.signal(t, syscall.SIGTERM)
	if code := replica.wait(t, 15*time.Second); code != 0 {
		t.Errorf("replica exit code %d after SIGTERM, want 0", code)
	}
	h.log("replica stderr", replica.stderr.String())
	h.log("replica stdout", replica.stdout.String())
	h.output("Redis keys and values", dumpRedis(t, client))
	monitor := stopMonitor()
	h.output("Redis MONITOR transcript (every command sent)", monitor)
	snapshotTokens()

	// The hunt covered the dangerous paths: the refused secret and the
	// faults were logged, tokens were logged (as fingerprints), and
	// there are tokens to look for.
	logs := replica.stderr.String()
	for _, want := range []string{"errcode 40125", "HTTP status 502", "errcode -1", "outcome unknown"} {
		if !strings.Contains(logs, want) {
			t.Errorf("replica log never mentions %q: the path that could leak was not logged", want)
		}
	}
	fingerprinted := 0
	for tok := range h.tokens {
		if strings.Contains(logs, wechat.Fingerprint(tok)) {
			fingerprinted++
		}
	}
	if len(h.tokens) < 4 || fingerprinted < 2 {
		t.Errorf("%d tokens collected, %d of them logged by fingerprint: too few to prove anything", len(h.tokens), fingerprinted)
	}
	t.Logf("scanned %d outputs and %d logs (%d bytes of replica log, %d bytes of MONITOR) for %d secrets and %d tokens",
		len(h.outputs), len(h.logs), len(logs), len(monitor), len(secrets), len(h.tokens))

	// The scan itself can fail: a planted secret is found.
	if len(findLeaks([]evidence{{"planted", "x" + secret1[3:20] + "y"}}, secrets, 12, 1)) != 1 {
		t.Fatal("the scanner misses a planted secret fragment")
	}

	all := append(append([]evidence{}, h.outputs...), h.logs...)
	leaks := findLeaks(all, secrets, 12, 1)
	tokens := map[string]string{}
	for tok := range h.tokens {
		tokens["token "+wechat.Fingerprint(tok)] = tok
	}
	leaks = append(leaks, findLeaks(h.logs, tokens, 24, 12)...)
	sort.Strings(leaks)
	for _, l := range leaks {
		t.Error(l)
	}

	// A secret pasted into the wrong setting must not be echoed by the
	// error that rejects it.
	misplacedLeaks := findLeaks(misplaced, secrets, 12, 1)
	sort.Strings(misplacedLeaks)
	for _, l := range misplacedLeaks {
		t.Errorf("secret in a non-secret field echoed: %s", l)
	}
}

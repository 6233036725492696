package config_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

const validYAML = `
identity: replica-a
redis:
  addrs: ["127.0.0.1:7000"]
apps:
  - id: wx0000000000000001
    secret: file-secret-wx0000000000000001
    mode: classic
  - id: wx0000000000000002
    secret_env: WX2_SECRET
    mode: stable
http:
  api_keys:
    - name: backend
      key: file-api-key-backend-xyz
      apps: ["wx0000000000000001"]
    - name: ops
      key_file: /secrets/ops
      apps: ["*"]
`

// files is a fake filesystem for secret files.
func files(m map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if s, ok := m[name]; ok {
			return []byte(s), nil
		}
		if s, ok := tlsFiles()[name]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
}

var stdFiles = files(map[string]string{"/secrets/ops": "ops-key-from-file-xyz\n"})

func load(t *testing.T, yaml string, env ...string) (*config.Config, error) {
	t.Helper()
	var data []byte
	if yaml != "" {
		data = []byte(yaml)
	}
	return config.Load(config.Options{File: "test.yaml", YAML: data, Environ: env, ReadFile: stdFiles})
}

func TestLoadValidFile(t *testing.T) {
	c, err := load(t, validYAML, "WX2_SECRET=env-secret-wx0000000000000002")
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity != "replica-a" || len(c.Apps) != 2 {
		t.Fatalf("identity %q apps %d", c.Identity, len(c.Apps))
	}
	if c.Apps[0].Secret.Reveal() != "file-secret-wx0000000000000001" || c.Apps[0].Mode != wechat.Classic {
		t.Errorf("wx0000000000000001 = %+v", c.Apps[0])
	}
	if c.Apps[1].Secret.Reveal() != "env-secret-wx0000000000000002" || c.Apps[1].Mode != wechat.Stable || c.Apps[1].SecretFrom != "env WX2_SECRET" {
		t.Errorf("wx0000000000000002 mode %v from %q", c.Apps[1].Mode, c.Apps[1].SecretFrom)
	}
	if got := c.HTTP.APIKeys[1].Key.Reveal(); got != "ops-key-from-file-xyz" {
		t.Errorf("ops key = %q, want the file's content without its newline", got)
	}
	// Defaults fill what the file leaves out.
	if c.Cache.RefreshAhead != 5*time.Minute || c.Lease.Duration != 15*time.Second || c.Log.Level != slog.LevelInfo || c.HTTP.Addr != "127.0.0.1:8080" {
		t.Errorf("defaults not applied: %+v %+v", c.Cache, c.Lease)
	}
}

func TestValidationErrors(t *testing.T) {
	withEnv := []string{"WX2_SECRET=x"}
	tests := []struct {
		name  string
		yaml  string // replaces validYAML when it starts with "!", else appended
		env   []string
		field string
		want  string
	}{
		{"missing secret", "!apps:\n  - id: wx0000000000000001\nhttp: {api_keys: []}\n", nil, "apps[0] (wx0000000000000001).secret", "missing: set exactly one of secret, secret_env, secret_file"},
		{"two secret sources", "!apps:\n  - {id: wx0000000000000001, secret: a, secret_file: /x}\nhttp: {api_keys: []}\n", nil, "apps[0] (wx0000000000000001).secret", "2 sources given"},
		{"secret_env unset", "!apps:\n  - {id: wx0000000000000001, secret_env: NOPE}\n", nil, "apps[0] (wx0000000000000001).secret", `"NOPE", which is not set`},
		{"secret_file missing", "!apps:\n  - {id: wx0000000000000001, secret_file: /nope}\n", nil, "apps[0] (wx0000000000000001).secret", "/nope"},
		{"unknown mode", "!apps:\n  - {id: wx0000000000000001, secret: a, mode: turbo}\n", nil, "apps[0] (wx0000000000000001).mode", `unknown mode "turbo"`},
		{"no apps", "!redis: {addrs: [\"h:1\"]}\n", nil, "apps", "no app configured"},
		{"duplicate app", "!apps:\n  - {id: wx0000000000000001, secret: a}\n  - {id: wx0000000000000001, secret: b}\n", nil, "apps[1] (wx0000000000000001).id", "duplicate appid"},
		{"bad appid", "!apps:\n  - {id: 'wx 1', secret: a}\n", nil, "apps[0] (\"wx 1\").id", "only letters"},
		{"bad duration", "cache:\n  refresh_ahead: 5x\n", withEnv, "cache.refresh_ahead", `"5x" is not a duration`},
		{"bad duration from env", "", append([]string{"TOKENKEEPER_LEASE_DURATION=soon"}, withEnv...), "lease.duration", `"soon" is not a duration`},
		{"lease duration <= renew deadline", "lease: {duration: 10s, renew_deadline: 10s, retry_period: 2s}\n", withEnv, "lease.duration", "must be greater than lease.renew_deadline"},
		{"renew deadline <= retry period", "lease: {duration: 15s, renew_deadline: 2s, retry_period: 2s}\n", withEnv, "lease.renew_deadline", "must be greater than lease.retry_period"},
		{"env integer", "", append([]string{"TOKENKEEPER_CACHE_DAILY_BUDGET=lots"}, withEnv...), "cache.daily_budget", `"lots" is not an integer`},
		{"env bool", "", append([]string{"TOKENKEEPER_REDIS_TLS=yes please"}, withEnv...), "redis.tls", `"yes please" is not true or false`},
		{"no redis addr", "", append([]string{"TOKENKEEPER_REDIS_ADDRS= , "}, withEnv...), "redis.addrs", "no Redis address"},
		{"bad redis addr", "", append([]string{"TOKENKEEPER_REDIS_ADDRS=nocolon"}, withEnv...), "redis.addrs[0]", "not host:port"},
		{"bad log level", "log: {level: loud}\n", withEnv, "log.level", `unknown level "loud"`},
		{"bad log format", "log: {format: xml}\n", withEnv, "log.format", `unknown format "xml"`},
		{"api key with no apps", "!apps: [{id: wx0000000000000001, secret: a}]\nhttp:\n  api_keys: [{name: k, key: kkkkkkkkkkkkkkkkkk}]\n", nil, "http.api_keys[0] (k).apps", "may read no app"},
		{"api key unknown app", "!apps: [{id: wx0000000000000001, secret: a}]\nhttp:\n  api_keys: [{name: k, key: kkkkkkkkkkkkkkkkkk, apps: [wx0000000000000009]}]\n", nil, "http.api_keys[0] (k).apps", `unknown appid "wx0000000000000009"`},
		{"api key missing key", "!apps: [{id: wx0000000000000001, secret: a}]\nhttp:\n  api_keys: [{name: k, apps: [wx0000000000000001]}]\n", nil, "http.api_keys[0] (k).key", "set exactly one of key, key_env, key_file"},
		{"same api key twice", "!apps: [{id: wx0000000000000001, secret: a}]\nhttp:\n  api_keys: [{name: k, key: same-same-same-same, apps: [wx0000000000000001]}, {name: j, key: same-same-same-same, apps: [wx0000000000000001]}]\n", nil, "http.api_keys[1] (j).key", "same key as http.api_keys[0]"},
		{"api key too short", "!apps: [{id: wx0000000000000001, secret: a}]\nhttp:\n  api_keys: [{name: k, key: short, apps: [wx0000000000000001]}]\n", nil, "http.api_keys[0] (k).key", "too short (5 characters)"},
		{"overlap too short", "cache: {overlap: 1m, margin: 1m}\n", withEnv, "cache.overlap", "must exceed cache.margin"},
		{"fetch timeout >= lock ttl", "cache: {fetch_timeout: 15s, lock_ttl: 15s}\n", withEnv, "cache.fetch_timeout", "shorter than cache.lock_ttl"},
		{"key prefix with brace", "cache: {key_prefix: 'a{b'}\n", withEnv, "cache.key_prefix", "no '{'"},
		{"bad http addr", "", append([]string{"TOKENKEEPER_HTTP_ADDR=localhost"}, withEnv...), "http.addr", "not host:port"},
		{"bad base url", "wechat: {base_url: 'ftp://x'}\n", withEnv, "wechat.base_url", "not an http(s) URL"},
		{"password in base url", "wechat: {base_url: 'https://ops:hunter2-secret@wx.example'}\n", withEnv, "wechat.base_url", "must not carry user info"},
		{"query in base url", "wechat: {base_url: 'https://wx.example/?key=hunter2-secret'}\n", withEnv, "wechat.base_url", "must not carry user info, a query"},
		{"two redis password sources", "", append([]string{"B=x", "TOKENKEEPER_REDIS_PASSWORD=a", "TOKENKEEPER_REDIS_PASSWORD_ENV=B"}, withEnv...), "redis.password", "2 sources given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := validYAML + tt.yaml
			if strings.HasPrefix(tt.yaml, "!") {
				yaml = tt.yaml[1:]
			}
			_, err := load(t, yaml, tt.env...)
			var cerr *config.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("err = %v, want a *config.Error", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error echoes a password: %v", err)
			}
			for _, p := range cerr.Problems {
				if p.Field == tt.field && strings.Contains(p.Reason, tt.want) {
					if !strings.Contains(err.Error(), `file "test.yaml"`) {
						t.Errorf("error does not name the file: %v", err)
					}
					return
				}
			}
			t.Fatalf("no problem %q containing %q in:\n%v", tt.field, tt.want, err)
		})
	}
}

func TestYAMLSyntaxErrorNamesFileAndLine(t *testing.T) {
	_, err := load(t, "redis:\n  addrs: [\"a:1\"\nlog:\n  level: info\n")
	if err == nil {
		t.Fatal("no error for broken YAML")
	}
	for _, want := range []string{`"test.yaml"`, "line ", "not valid YAML"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestUnknownKeyInFileIsAnError(t *testing.T) {
	_, err := load(t, validYAML+"cache:\n  refresh_ahed: 1m\n", "WX2_SECRET=x")
	if err == nil || !strings.Contains(err.Error(), "refresh_ahed") {
		t.Fatalf("err = %v, want it to name the misspelt key", err)
	}
}

func TestMissingConfigFile(t *testing.T) {
	_, err := config.Load(config.Options{File: filepath.Join(t.TempDir(), "nope.yaml"), Environ: []string{}})
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v, want it to name the file", err)
	}
}

// envOnly is a complete configuration in environment variables alone.
var envOnly = []string{
	"TOKENKEEPER_IDENTITY=env-replica",
	"TOKENKEEPER_REDIS_ADDRS=10.0.0.1:6379, 10.0.0.2:6379",
	"TOKENKEEPER_REDIS_USERNAME=tk",
	"TOKENKEEPER_REDIS_PASSWORD_FILE=/secrets/redis",
	"TOKENKEEPER_REDIS_MASTER_NAME=mymaster",
	"TOKENKEEPER_REDIS_DB=2",
	"TOKENKEEPER_REDIS_TLS=true",
	"TOKENKEEPER_REDIS_TLS_CA_FILE=/tls/ca.crt",
	"TOKENKEEPER_REDIS_TLS_CERT_FILE=/tls/client.crt",
	"TOKENKEEPER_REDIS_TLS_KEY_FILE=/tls/client.key",
	"TOKENKEEPER_REDIS_TLS_SERVER_NAME=redis.internal",
	"TOKENKEEPER_REDIS_LOCK_ADDRS=10.0.1.1:6379,10.0.1.2:6379,10.0.1.3:6379",
	"TOKENKEEPER_WECHAT_BASE_URL=http://fake:9000",
	"TOKENKEEPER_WECHAT_TIMEOUT=3s",
	"TOKENKEEPER_APPS=wx00000000000000a1:classic,wx0000000000000002:stable,wx0000000000000003",
	"TOKENKEEPER_APPS_WX00000000000000A1_SECRET=env-secret-1",
	"TOKENKEEPER_APPS_WX0000000000000002_SECRET_ENV=OTHER_VAR",
	"OTHER_VAR=env-secret-2",
	"TOKENKEEPER_APPS_WX0000000000000003_SECRET_FILE=/secrets/wx0000000000000003",
	"TOKENKEEPER_APPS_WX0000000000000003_MODE=stable",
	"TOKENKEEPER_CACHE_KEY_PREFIX=tk:",
	"TOKENKEEPER_CACHE_REFRESH_AHEAD=20s",
	"TOKENKEEPER_CACHE_MARGIN=5s",
	"TOKENKEEPER_CACHE_OVERLAP=20s",
	"TOKENKEEPER_CACHE_LOCK_TTL=4s",
	"TOKENKEEPER_CACHE_FETCH_TIMEOUT=3s",
	"TOKENKEEPER_CACHE_NEAR_MAX_AGE=2s",
	"TOKENKEEPER_CACHE_DAILY_BUDGET=100",
	"TOKENKEEPER_CACHE_CONFIG_HOLD=15m",
	"TOKENKEEPER_LEASE_NAME=tk:leader",
	"TOKENKEEPER_LEASE_DURATION=6s",
	"TOKENKEEPER_LEASE_RENEW_DEADLINE=4s",
	"TOKENKEEPER_LEASE_RETRY_PERIOD=1s",
	"TOKENKEEPER_HTTP_ADDR=0.0.0.0:9090",
	"TOKENKEEPER_HTTP_INVALIDATE_RATE=0.5",
	"TOKENKEEPER_HTTP_API_KEYS=backend,ops-team",
	"TOKENKEEPER_HTTP_API_KEYS_BACKEND_KEY=env-api-key-1-long-enough",
	"TOKENKEEPER_HTTP_API_KEYS_BACKEND_APPS=wx00000000000000a1,wx0000000000000002",
	"TOKENKEEPER_HTTP_API_KEYS_OPS_TEAM_KEY_ENV=OPS_KEY",
	"OPS_KEY=env-api-key-2-long-enough",
	"TOKENKEEPER_HTTP_API_KEYS_OPS_TEAM_APPS=*",
	"TOKENKEEPER_LOG_LEVEL=debug",
	"TOKENKEEPER_LOG_FORMAT=json",
	"TOKENKEEPER_GATEWAY_ADDR=0.0.0.0:9091",
	"TOKENKEEPER_GATEWAY_CREDENTIALS=team-a",
	"TOKENKEEPER_GATEWAY_CREDENTIALS_TEAM_A_KEY=env-gateway-credential-1",
	"TOKENKEEPER_GATEWAY_CREDENTIALS_TEAM_A_APPS=wx0000000000000002",
	"TOKENKEEPER_GATEWAY_ACCEPT_APP_SECRET=true",
	"TOKENKEEPER_GATEWAY_MAX_BODY=2048",
	"TOKENKEEPER_GATEWAY_RETRY_BUFFER=1024",
	"TOKENKEEPER_GATEWAY_TIMEOUT=7s",
	"TOKENKEEPER_GATEWAY_MAX_CONCURRENT=9",
	"TOKENKEEPER_GATEWAY_ACCESS_LOG=true",
	"TOKENKEEPER_HTTP_ALLOW_UNAUTHENTICATED=true",
	"TOKENKEEPER_HTTP_TLS_CERT_FILE=/tls/cert.pem",
	"TOKENKEEPER_HTTP_TLS_KEY_FILE=/tls/key.pem",
	"TOKENKEEPER_METRICS_ADDR=127.0.0.1:9091",
	"TOKENKEEPER_SCHEDULER_MAX_CONCURRENT=64",
	"TOKENKEEPER_METRICS_PER_APP=off",
}

// envFiles are the files envOnly names.
func envFiles(t *testing.T) func(string) ([]byte, error) {
	cert, key := testCert(t)
	return files(map[string]string{"/secrets/redis": "redis-pw\n", "/secrets/wx0000000000000003": "env-secret-3", "/tls/cert.pem": cert, "/tls/key.pem": key})
}

func TestEnvOnly(t *testing.T) {
	read := envFiles(t)
	c, err := config.Load(config.Options{Environ: envOnly, ReadFile: read})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.UnusedEnv) != 0 {
		t.Errorf("unused variables: %v", c.UnusedEnv)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("identity", c.Identity, "env-replica")
	check("addrs", strings.Join(c.Redis.Addrs, "|"), "10.0.0.1:6379|10.0.0.2:6379")
	check("password", c.Redis.Password.Reveal(), "redis-pw")
	check("db", c.Redis.DB, 2)
	check("tls", c.Redis.TLS, true)
	check("base url", c.WeChat.BaseURL, "http://fake:9000")
	check("timeout", c.WeChat.Timeout, 3*time.Second)
	check("apps", len(c.Apps), 3)
	check("wx00000000000000a1", c.Apps[0].ID+"/"+c.Apps[0].Mode.String()+"/"+c.Apps[0].Secret.Reveal(), "wx00000000000000a1/classic/env-secret-1")
	check("wx0000000000000002", c.Apps[1].ID+"/"+c.Apps[1].Mode.String()+"/"+c.Apps[1].Secret.Reveal(), "wx0000000000000002/stable/env-secret-2")
	check("wx0000000000000003", c.Apps[2].ID+"/"+c.Apps[2].Mode.String()+"/"+c.Apps[2].Secret.Reveal(), "wx0000000000000003/stable/env-secret-3")
	check("key prefix", c.Cache.KeyPrefix, "tk:")
	check("refresh ahead", c.Cache.RefreshAhead, 20*time.Second)
	check("margin", c.Cache.Margin, 5*time.Second)
	check("overlap", c.Cache.Overlap, 20*time.Second)
	check("lock ttl", c.Cache.LockTTL, 4*time.Second)
	check("fetch timeout", c.Cache.FetchTimeout, 3*time.Second)
	check("near max age", c.Cache.NearMaxAge, 2*time.Second)
	check("budget", c.Cache.DailyBudget, 100)
	check("config hold", c.Cache.ConfigHold, 15*time.Minute)
	check("lease", c.Lease, config.Lease{Name: "tk:leader", Duration: 6 * time.Second, RenewDeadline: 4 * time.Second, RetryPeriod: time.Second})
	check("http addr", c.HTTP.Addr, "0.0.0.0:9090")
	check("rate", c.HTTP.InvalidateRate, 0.5)
	check("keys", len(c.HTTP.APIKeys), 2)
	check("backend", c.HTTP.APIKeys[0].Key.Reveal()+" "+strings.Join(c.HTTP.APIKeys[0].Apps, ","), "env-api-key-1-long-enough wx00000000000000a1,wx0000000000000002")
	check("ops", c.HTTP.APIKeys[1].Key.Reveal()+" "+strings.Join(c.HTTP.APIKeys[1].Apps, ","), "env-api-key-2-long-enough *")
	check("level", c.Log.Level, slog.LevelDebug)
	check("format", c.Log.Format, "json")
	g := c.Gateway
	check("gateway", fmt.Sprintf("%v %v %v %v %v %v %v", g.Addr, g.AcceptAppSecret, g.MaxBody, g.RetryBuffer, g.Timeout, g.MaxConcurrent, g.AccessLog), "0.0.0.0:9091 true 2048 1024 7s 9 true")
	check("gateway credentials", len(g.Credentials), 1)
	check("team-a", g.Credentials[0].Name+" "+g.Credentials[0].Key.Reveal()+" "+strings.Join(g.Credentials[0].Apps, ","), "team-a env-gateway-credential-1 wx0000000000000002")
	check("allow unauthenticated", c.HTTP.AllowUnauthenticated, true)
	check("tls", c.HTTP.TLS, config.TLSFiles{CertFile: "/tls/cert.pem", KeyFile: "/tls/key.pem"})
	check("metrics addr", c.Metrics.Addr, "127.0.0.1:9091")
	check("max concurrent", c.Scheduler.MaxConcurrent, 64)
	check("per app", c.Metrics.PerApp, "off")

	ro := c.RedisOptions()
	check("redis opts", ro.MasterName+" "+ro.Username+" "+ro.Password, "mymaster tk redis-pw")
	if ro.TLSConfig == nil {
		t.Error("TLS on but no TLSConfig")
	}
	checkTLSFromFiles(t, c)
}

// TestEveryScalarKeyHasAVariable proves that envOnly covers every scalar
// key, so "every key works from the environment" is tested, not assumed.
func TestEveryScalarKeyHasAVariable(t *testing.T) {
	set := map[string]bool{}
	for _, kv := range envOnly {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	for _, name := range config.EnvVars() {
		switch name {
		case "TOKENKEEPER_CONFIG", "TOKENKEEPER_REDIS_PASSWORD", "TOKENKEEPER_REDIS_PASSWORD_ENV":
			continue // alternatives to TOKENKEEPER_REDIS_PASSWORD_FILE, and the file itself
		}
		if !set[name] {
			t.Errorf("%s is not exercised by the env-only test", name)
		}
	}
}

func TestPrecedenceFileEnvFlags(t *testing.T) {
	yaml := validYAML + "cache:\n  refresh_ahead: 2m\n  margin: 30s\nlog:\n  level: warn\n"
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--log-level=error"}); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(config.Options{
		File: "test.yaml", YAML: []byte(yaml), Flags: fs, ReadFile: stdFiles,
		Environ: []string{
			"WX2_SECRET=x",
			"TOKENKEEPER_CACHE_REFRESH_AHEAD=3m", // env beats file
			"TOKENKEEPER_LOG_LEVEL=debug",        // flag beats env
			"TOKENKEEPER_APPS_WX0000000000000001_SECRET_FILE=/secrets/ops",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Cache.RefreshAhead != 3*time.Minute {
		t.Errorf("refresh_ahead = %v, want the environment's 3m", c.Cache.RefreshAhead)
	}
	if c.Cache.Margin != 30*time.Second {
		t.Errorf("margin = %v, want the file's 30s", c.Cache.Margin)
	}
	if c.Log.Level != slog.LevelError {
		t.Errorf("level = %v, want the flag's error", c.Log.Level)
	}
	// A per-app variable replaces the file's secret source (not a second source).
	if c.Apps[0].Secret.Reveal() != "ops-key-from-file-xyz" || c.Apps[0].SecretFrom != "file /secrets/ops" {
		t.Errorf("wx0000000000000001 secret from %q", c.Apps[0].SecretFrom)
	}
}

func TestEnvAppsListKeepsFileSecrets(t *testing.T) {
	c, err := load(t, validYAML, "WX2_SECRET=x", "TOKENKEEPER_APPS=wx0000000000000001:stable", "TOKENKEEPER_HTTP_API_KEYS=backend")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) != 1 || c.Apps[0].ID != "wx0000000000000001" || c.Apps[0].Mode != wechat.Stable || c.Apps[0].Secret.Reveal() != "file-secret-wx0000000000000001" {
		t.Fatalf("apps = %+v", c.Apps)
	}
	if len(c.HTTP.APIKeys) != 1 || c.HTTP.APIKeys[0].Key.Reveal() != "file-api-key-backend-xyz" {
		t.Fatalf("keys = %+v", c.HTTP.APIKeys)
	}
}

func TestEnvTwoSecretSources(t *testing.T) {
	_, err := config.Load(config.Options{Environ: []string{
		"TOKENKEEPER_APPS=wx0000000000000001", "TOKENKEEPER_APPS_WX0000000000000001_SECRET=a", "TOKENKEEPER_APPS_WX0000000000000001_SECRET_ENV=B", "B=b",
	}})
	if err == nil || !strings.Contains(err.Error(), "apps[0] (wx0000000000000001).secret: 2 sources given") || !strings.Contains(err.Error(), "TOKENKEEPER_APPS_WX0000000000000001_SECRET") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnusedEnv(t *testing.T) {
	c, err := load(t, validYAML, "WX2_SECRET=x", "TOKENKEEPER_CACHE_REFRESH_AHAED=1m", "TOKENKEEPER_APPS_WX0000000000000009_SECRET=zz", "TOKENKEEPER_LOG_LEVEL=")
	if err != nil {
		t.Fatal(err)
	}
	want := "TOKENKEEPER_APPS_WX0000000000000009_SECRET TOKENKEEPER_CACHE_REFRESH_AHAED"
	if got := strings.Join(c.UnusedEnv, " "); got != want {
		t.Errorf("unused = %q, want %q (empty variables count as unset)", got, want)
	}
}

func TestPrintRedactsEverySecret(t *testing.T) {
	env := append([]string{}, envOnly...)
	read := envFiles(t)
	c, err := config.Load(config.Options{Environ: env, ReadFile: read})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.Print(&out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, secret := range []string{"redis-pw", "env-secret-1", "env-secret-2", "env-secret-3", "env-api-key-1-long-enough", "env-api-key-2-long-enough"} {
		if strings.Contains(s, secret) {
			t.Errorf("printed config contains the secret %q:\n%s", secret, s)
		}
	}
	for _, want := range []string{"[redacted] (env TOKENKEEPER_APPS_WX00000000000000A1_SECRET)", "[redacted] (env OTHER_VAR)", "[redacted] (file /secrets/wx0000000000000003)", "[redacted] (file /secrets/redis)", "refresh_ahead: 20s", "id: wx00000000000000a1"} {
		if !strings.Contains(s, want) {
			t.Errorf("printed config lacks %q:\n%s", want, s)
		}
	}
	// The printed form loads back (secrets aside): it is the same schema.
	if !strings.Contains(s, "lease:\n  name: tk:leader\n  duration: 6s") {
		t.Errorf("lease section not in file shape:\n%s", s)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	_, err := load(t, "apps:\n  - {id: wx0000000000000001, secret: topsecret-1, secret_file: /x}\nhttp:\n  api_keys: [{name: k, key: topsecret-2}]\n")
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("error leaks a secret: %v", err)
	}
}

func TestConversions(t *testing.T) {
	c, err := load(t, validYAML+"lease: {duration: 3s, renew_deadline: 2s, retry_period: 500ms}\n", "WX2_SECRET=x")
	if err != nil {
		t.Fatal(err)
	}
	ro := c.RedisOptions()
	if len(ro.Addrs) != 1 || ro.Addrs[0] != "127.0.0.1:7000" || ro.TLSConfig != nil {
		t.Errorf("redis options %+v", ro)
	}
	// A dead Redis must fail fast so the cache serves its near copy.
	if ro.DialerRetries != 1 || ro.DialTimeout != time.Second || ro.ReadTimeout != time.Second {
		t.Errorf("redis timeouts: dialer retries %d, dial %v, read %v", ro.DialerRetries, ro.DialTimeout, ro.ReadTimeout)
	}
	// The pool holds every refresh the scheduler may have under way.
	if want := max(10*runtime.GOMAXPROCS(0), c.Scheduler.MaxConcurrent+16); ro.PoolSize != want {
		t.Errorf("redis pool %d, want %d", ro.PoolSize, want)
	}
	c.Scheduler.MaxConcurrent = 400
	if ro := c.RedisOptions(); ro.PoolSize < 400 {
		t.Errorf("redis pool %d with scheduler.max_concurrent 400: refreshes would queue on the pool", ro.PoolSize)
	}
	mr := miniredis.RunT(t)
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{mr.Addr()}})
	defer client.Close()
	ec := c.ElectorConfig(client, lock.LeaderCallbacks{}, nil)
	if ec.Identity != "replica-a" || ec.LeaseDuration != 3*time.Second || ec.RenewDeadline != 2*time.Second || ec.RetryPeriod != 500*time.Millisecond {
		t.Errorf("elector config %+v", ec)
	}
	if _, err := lock.NewElector(ec); err != nil {
		t.Errorf("elector refuses the mapped config: %v", err)
	}
	src, err := wechat.NewSource(wechat.NewClient(c.WeChatClientOptions()...), c.WeChatApps()...)
	if err != nil {
		t.Fatal(err)
	}
	if src.Mode("wx0000000000000002") != wechat.Stable {
		t.Error("wx0000000000000002 not stable in the source")
	}
	cache, err := tokencache.New(client, src, c.CacheOptions()...)
	if err != nil {
		t.Fatalf("tokencache refuses the mapped options: %v", err)
	}
	cache.Close()
	if got := c.LastFetchKey("wx0000000000000001"); got != "tokenkeeper:{wx0000000000000001}:last_fetch" {
		t.Errorf("last fetch key %q", got)
	}
}

// TestValidDefaultsAgreeWithTokencache: the config's own cache checks must
// not let through what tokencache.New refuses.
func TestValidDefaultsAgreeWithTokencache(t *testing.T) {
	for _, extra := range []string{"", "cache: {overlap: 20s, margin: 5s, near_max_age: 2s, refresh_ahead: 20s}\n", "cache: {near_max_age: 0s}\n"} {
		c, err := load(t, validYAML+extra, "WX2_SECRET=x")
		if err != nil {
			t.Fatal(err)
		}
		mr := miniredis.RunT(t)
		client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		src, _ := wechat.NewSource(wechat.NewClient(), c.WeChatApps()...)
		cache, err := tokencache.New(client, src, c.CacheOptions()...)
		if err != nil {
			t.Errorf("%q: %v", extra, err)
			continue
		}
		cache.Close()
		client.Close()
	}
}

func TestRedisTLSServerName(t *testing.T) {
	c, err := load(t, validYAML, "WX2_SECRET=x", "TOKENKEEPER_REDIS_TLS=true", "TOKENKEEPER_REDIS_ADDRS=redis.example.com:6380")
	if err != nil {
		t.Fatal(err)
	}
	ro := c.RedisOptions()
	if ro.TLSConfig == nil || ro.TLSConfig.ServerName != "redis.example.com" || ro.TLSConfig.MinVersion == 0 {
		t.Fatalf("TLS config %+v: want the server's host name checked, TLS >= 1.2", ro.TLSConfig)
	}
	c, err = load(t, validYAML, "WX2_SECRET=x", "TOKENKEEPER_REDIS_TLS=true", "TOKENKEEPER_REDIS_ADDRS=a:1,b:2")
	if err != nil {
		t.Fatal(err)
	}
	if ro := c.RedisOptions(); ro.TLSConfig == nil || ro.TLSConfig.ServerName != "" {
		t.Fatalf("cluster TLS config %+v: go-redis names each node itself", ro.TLSConfig)
	}
}

// Someone pastes the AppSecret into the wrong setting: the error that
// rejects it names the setting, never the whole value.
func TestRejectedValuesAreNotEchoedInFull(t *testing.T) {
	const pasted = "0123456789abcdef0123456789abcdef"
	cases := map[string]string{
		"mode":       "apps:\n  - {id: wx0000000000000001, secret: x, mode: " + pasted + "}\nredis: {addrs: [\"127.0.0.1:6379\"]}\n",
		"log level":  "apps:\n  - {id: wx0000000000000001, secret: x}\nredis: {addrs: [\"127.0.0.1:6379\"]}\nlog: {level: " + pasted + "}\n",
		"secret_env": "apps:\n  - {id: wx0000000000000001, secret_env: " + pasted + "}\nredis: {addrs: [\"127.0.0.1:6379\"]}\n",
		"a key":      pasted + ": 1\napps:\n  - {id: wx0000000000000001, secret: x}\n",
	}
	for name, yaml := range cases {
		_, err := config.Load(config.Options{YAML: []byte(yaml), Environ: []string{}})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), pasted[:12]) {
			t.Errorf("%s: the error echoes the value: %v", name, err)
		}
		if !strings.Contains(err.Error(), `"0123…" (32 characters`) {
			t.Errorf("%s: the error does not show the value's start and length: %v", name, err)
		}
	}
}

func TestGatewaySettingsAreValidated(t *testing.T) {
	env := []string{"WX2_SECRET=env-secret-wx2"}
	read := files(map[string]string{"/secrets/ops": "file-api-key-ops-12345"})
	load := func(gw string) error {
		_, err := config.Load(config.Options{YAML: []byte(validYAML + "gateway:\n" + gw), Environ: env, ReadFile: read})
		return err
	}
	c, err := config.Load(config.Options{YAML: []byte(validYAML + "gateway:\n  addr: 127.0.0.1:8090\n  credentials:\n    - {name: sdk, key: gateway-credential-123, apps: [wx0000000000000001]}\n"), Environ: env, ReadFile: read})
	if err != nil {
		t.Fatalf("a valid gateway section: %v", err)
	}
	var out strings.Builder
	if err := c.Print(&out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "gateway-credential-123") || !strings.Contains(out.String(), "name: sdk") {
		t.Fatalf("printed gateway credentials must show the name, never the key:\n%s", out.String())
	}
	for _, c := range []struct{ yaml, want string }{
		{"  addr: 127.0.0.1:8090\n", "gateway.credentials: none, and gateway.accept_app_secret is off"},
		{"  addr: nowhere\n  accept_app_secret: true\n", "gateway.addr: \"nowhere\" is not host:port"},
		{"  addr: 127.0.0.1:8080\n  accept_app_secret: true\n", "is http.addr too"},
		{"  addr: :8090\n  credentials:\n    - {name: sdk, key: short, apps: [wx0000000000000001]}\n", "gateway.credentials[0] (sdk).key: too short"},
		{"  addr: :8090\n  credentials:\n    - {name: sdk, key: gateway-credential-123, apps: [wx9]}\n", "unknown appid \"wx9\""},
		{"  addr: :8090\n  credentials:\n    - {name: sdk, key: file-secret-wx0000000000000001, apps: [wx0000000000000001]}\n", "is app wx0000000000000001's AppSecret"},
		{"  addr: :8090\n  credentials:\n    - {name: a, key: gateway-credential-123, apps: [wx0000000000000001]}\n    - {name: b, key: gateway-credential-123, apps: [wx0000000000000001]}\n", "same key as gateway.credentials[0] (a)"},
		{"  addr: :8090\n  accept_app_secret: true\n  max_body: 100\n  retry_buffer: 200\n", "gateway.retry_buffer: 200 must not exceed gateway.max_body 100"},
		{"  addr: :8090\n  accept_app_secret: true\n  max_concurrent: 0\n", "gateway.max_concurrent: 0: must be positive"},
		{"  addr: :8090\n  accept_app_secret: true\n  timeout: soon\n", "gateway.timeout: \"soon\" is not a duration"},
	} {
		err := load(c.yaml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("gateway:\n%s: got %v, want a problem containing %q", c.yaml, err, c.want)
			continue
		}
		for _, secret := range []string{"gateway-credential-123", "file-secret-wx0000000000000001"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows a secret: %v", err)
			}
		}
	}
}

// TestSchedulerAndMetricsKeys: the defaults, and precise errors for values
// out of range.
func TestSchedulerAndMetricsKeys(t *testing.T) {
	c, err := load(t, validYAML, "WX2_SECRET=x")
	if err != nil {
		t.Fatal(err)
	}
	if c.Scheduler.MaxConcurrent != scheduler.DefaultMaxConcurrent || c.Metrics.PerApp != "auto" {
		t.Fatalf("defaults: max_concurrent %d per_app %q", c.Scheduler.MaxConcurrent, c.Metrics.PerApp)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"scheduler:\n  max_concurrent: 0\n", "scheduler.max_concurrent"},
		{"scheduler:\n  max_concurrent: 1001\n", "must be 1 to 1000"},
		{"metrics:\n  per_app: sometimes\n", `want auto, on or off`},
	} {
		_, err := load(t, validYAML+tc.yaml, "WX2_SECRET=x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v; want one naming %q", tc.yaml, err, tc.want)
		}
	}
}

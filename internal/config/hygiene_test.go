package config_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// Valid WeChat appids ("wx" and 16 hexadecimal digits).
const (
	appA = "wx0123456789abcdef"
	appB = "wxfedcba9876543210"
)

// pastedSecret has the shape of a WeChat AppSecret: 32 hexadecimal digits.
const pastedSecret = "0123456789abcdef0123456789abcdef"

func loadEnv(t *testing.T, env ...string) error {
	t.Helper()
	_, err := config.Load(config.Options{Environ: env, ReadFile: stdFiles})
	return err
}

func problemsOf(t *testing.T, err error) []config.Problem {
	t.Helper()
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want a *config.Error", err)
	}
	return cerr.Problems
}

// A secret pasted into TOKENKEEPER_APPS (where appids go) is refused, and no
// part of the error, the variables' names included, repeats it.
func TestSecretPastedIntoAppsListIsNotEchoed(t *testing.T) {
	err := loadEnv(t, "TOKENKEEPER_APPS="+pastedSecret)
	if err == nil {
		t.Fatal("a 32-character secret was accepted as an appid")
	}
	if strings.Contains(strings.ToLower(err.Error()), pastedSecret[:12]) {
		t.Fatalf("the error echoes the pasted secret:\n%v", err)
	}
	if !strings.Contains(err.Error(), "shape of an AppSecret") {
		t.Errorf("the error does not say why the appid is refused:\n%v", err)
	}
}

func TestSecretPastedIntoAPIKeysListIsNotEchoed(t *testing.T) {
	err := loadEnv(t, "TOKENKEEPER_APPS="+appA, "TOKENKEEPER_APPS_"+strings.ToUpper(appA)+"_SECRET=s",
		"TOKENKEEPER_HTTP_API_KEYS="+pastedSecret+"-and-more-of-it")
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(strings.ToLower(err.Error()), pastedSecret[:12]) {
		t.Fatalf("the error echoes the pasted key:\n%v", err)
	}
}

// A hexadecimal key that starts with a letter passes the character rule:
// its length and digits give it away.
func TestHexKeyPastedIntoAPIKeysListIsNotEchoed(t *testing.T) {
	const hexKey = "abcdef0123456789abcdef0123456789"
	err := loadEnv(t, "TOKENKEEPER_APPS="+appA, "TOKENKEEPER_APPS_"+strings.ToUpper(appA)+"_SECRET=s", "TOKENKEEPER_HTTP_API_KEYS="+hexKey)
	if err == nil || strings.Contains(strings.ToLower(err.Error()), hexKey[:12]) || !strings.Contains(err.Error(), "look like a key") {
		t.Fatalf("err = %v, want the name refused without echoing it", err)
	}
}

func TestAppIDMustHaveWeChatShape(t *testing.T) {
	for _, id := range []string{pastedSecret, "wx1", "wx0123456789abcdeg", "ab0123456789abcdef", "wx0123456789abcdef0"} {
		_, err := load(t, "apps: [{id: '"+id+"', secret: s}]\n")
		if err == nil {
			t.Errorf("%q accepted as an appid", id)
			continue
		}
		if !strings.Contains(err.Error(), `"wx" followed by 16 hexadecimal digits`) {
			t.Errorf("%q: the error does not say what an appid looks like:\n%v", id, err)
		}
	}
	if _, err := load(t, "apps: [{id: "+appA+", secret: s}]\n"); err != nil {
		t.Errorf("valid appid refused: %v", err)
	}
}

// secretFileCase loads one app whose secret is the file /s holding content.
func loadSecretFile(content string) (*config.Config, error) {
	return config.Load(config.Options{YAML: []byte("apps: [{id: " + appA + ", secret_file: /run/secrets/wx}]\n"), Environ: []string{},
		ReadFile: files(map[string]string{"/run/secrets/wx": content})})
}

func TestSecretFileTrimsExactlyOneNewline(t *testing.T) {
	for content, want := range map[string]string{"s3cret": "s3cret", "s3cret\n": "s3cret", "s3cret\r\n": "s3cret"} {
		c, err := loadSecretFile(content)
		if err != nil {
			t.Errorf("%q: %v", content, err)
			continue
		}
		if got := c.Apps[0].Secret.Reveal(); got != want {
			t.Errorf("%q: secret %q, want %q", content, got, want)
		}
	}
}

func TestSecretFileWithOtherWhitespaceIsRefusedNamingThePath(t *testing.T) {
	for _, content := range []string{"s3cret ", "s3cret \n", " s3cret", "s3cret\n\n", "s3cret\nsecond line\n", "s3c ret", "s3cret\t"} {
		_, err := loadSecretFile(content)
		if err == nil {
			t.Errorf("%q: accepted", content)
			continue
		}
		if !strings.Contains(err.Error(), `"/run/secrets/wx"`) {
			t.Errorf("%q: the error does not name the file in full: %v", content, err)
		}
		if strings.Contains(err.Error(), "s3c") {
			t.Errorf("%q: the error shows the content: %v", content, err)
		}
	}
}

// A key file with a trailing space used to make the key unusable (every
// request 401) without a word.
func TestKeyFileWithTrailingSpaceIsRefused(t *testing.T) {
	_, err := config.Load(config.Options{
		YAML:     []byte("apps: [{id: " + appA + ", secret: s}]\nhttp:\n  api_keys: [{name: ops, key_file: /k, apps: ['*']}]\n"),
		Environ:  []string{},
		ReadFile: files(map[string]string{"/k": "0123456789abcdef-key \n"}),
	})
	if err == nil || !strings.Contains(err.Error(), `key_file "/k"`) {
		t.Fatalf("err = %v, want the trailing space refused naming key_file \"/k\"", err)
	}
}

type fakeInfo struct {
	fs.FileInfo
	mode fs.FileMode
}

func (f fakeInfo) Mode() fs.FileMode { return f.mode }

func TestWorldReadableSecretFileWarns(t *testing.T) {
	stat := func(mode fs.FileMode) func(string) (fs.FileInfo, error) {
		return func(string) (fs.FileInfo, error) { return fakeInfo{mode: mode}, nil }
	}
	opts := config.Options{YAML: []byte("apps: [{id: " + appA + ", secret_file: /run/secrets/wx}]\n"), Environ: []string{},
		ReadFile: files(map[string]string{"/run/secrets/wx": "s\n"})}
	opts.Stat = stat(0o644)
	c, err := config.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], `"/run/secrets/wx"`) || !strings.Contains(c.Warnings[0], "readable by everyone") {
		t.Fatalf("warnings %q, want one naming the world-readable file", c.Warnings)
	}
	opts.Stat = stat(0o640)
	if c, err = config.Load(opts); err != nil || len(c.Warnings) != 0 {
		t.Fatalf("0640: warnings %q, err %v", c.Warnings, err)
	}
}

func TestDailyBudgetOverflowIsNotNegative(t *testing.T) {
	for _, src := range []struct{ yaml, env string }{
		{"cache: {daily_budget: 99999999999999999999}\n", ""},
		{"cache: {daily_budget: 9223372036854775808}\n", ""},
		{"", "TOKENKEEPER_CACHE_DAILY_BUDGET=99999999999999999999"},
	} {
		env := []string{}
		if src.env != "" {
			env = append(env, src.env)
		}
		_, err := config.Load(config.Options{YAML: []byte("apps: [{id: " + appA + ", secret: s}]\n" + src.yaml), Environ: env})
		if err == nil {
			t.Errorf("%+v: accepted", src)
			continue
		}
		if strings.Contains(err.Error(), "-9223372036854775808") || strings.Contains(err.Error(), "negative") {
			t.Errorf("%+v: the overflow is reported as a negative number: %v", src, err)
		}
		if !strings.Contains(err.Error(), "too large") {
			t.Errorf("%+v: the error does not say the number is too large: %v", src, err)
		}
	}
}

func TestBadDurationIsOneProblem(t *testing.T) {
	_, err := load(t, "apps: [{id: "+appA+", secret: s}]\ncache: {refresh_ahead: 5x}\nlease: {renew_deadline: soon}\n")
	ps := problemsOf(t, err)
	count := map[string]int{}
	for _, p := range ps {
		count[p.Field]++
	}
	if count["cache.refresh_ahead"] != 1 || count["lease.renew_deadline"] != 1 || len(ps) != 2 {
		t.Fatalf("want exactly one problem per bad duration, got:\n%v", err)
	}
}

func TestInvalidateRateMustBeFinite(t *testing.T) {
	for _, v := range []string{".inf", "1e400"} {
		_, err := load(t, "apps: [{id: "+appA+", secret: s}]\nhttp: {invalidate_rate: "+v+"}\n")
		if err == nil || !strings.Contains(err.Error(), "http.invalidate_rate") {
			t.Errorf("invalidate_rate %s: err = %v, want it refused", v, err)
		}
	}
}

// A test or relay upstream may name its apps as it likes; an appid shaped
// like an AppSecret is refused whatever the upstream.
func TestAppIDShapeForOtherUpstreams(t *testing.T) {
	const other = "wechat: {base_url: 'http://127.0.0.1:9'}\n"
	if _, err := load(t, other+"apps: [{id: wx1, secret: s}]\n"); err != nil {
		t.Errorf("short appid refused for a non-WeChat upstream: %v", err)
	}
	_, err := load(t, other+"apps: [{id: '"+pastedSecret+"', secret: s}]\n")
	if err == nil || !strings.Contains(err.Error(), "shape of an AppSecret") || strings.Contains(err.Error(), pastedSecret[:12]) {
		t.Errorf("err = %v, want the AppSecret-shaped appid refused, unquoted", err)
	}
}

func TestNoAPIKeysBeyondLoopbackIsRefused(t *testing.T) {
	base := "apps: [{id: " + appA + ", secret: s}]\n"
	for addr, ok := range map[string]bool{"127.0.0.1:8080": true, "[::1]:8080": true, "localhost:8080": true, ":8080": false, "0.0.0.0:8080": false, "10.1.2.3:8080": false} {
		_, err := load(t, base+"http: {addr: '"+addr+"'}\n")
		if ok && err != nil {
			t.Errorf("%s: refused: %v", addr, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "allow_unauthenticated")) {
			t.Errorf("%s: err = %v, want refused naming http.allow_unauthenticated", addr, err)
		}
	}
	if _, err := load(t, base+"http: {addr: ':8080', allow_unauthenticated: true}\n"); err != nil {
		t.Errorf("allow_unauthenticated: true still refused: %v", err)
	}
}

func TestMetricsAddrAndTLSFiles(t *testing.T) {
	cert, key := testCert(t)
	read := files(map[string]string{"/c.pem": cert, "/k.pem": key, "/other.pem": cert})
	loadWith := func(extra string) error {
		_, err := config.Load(config.Options{YAML: []byte("apps: [{id: " + appA + ", secret: s}]\n" + extra), Environ: []string{}, ReadFile: read})
		return err
	}
	if err := loadWith("metrics: {addr: '127.0.0.1:9090'}\nhttp: {tls: {cert_file: /c.pem, key_file: /k.pem}}\n"); err != nil {
		t.Fatalf("valid metrics.addr and TLS refused: %v", err)
	}
	for extra, want := range map[string]string{
		"metrics: {addr: '127.0.0.1:8080'}\n":                        "address of its own",
		"metrics: {addr: 'nope'}\n":                                  "not host:port",
		"http: {tls: {cert_file: /c.pem}}\n":                         "both cert_file and key_file",
		"http: {tls: {cert_file: /c.pem, key_file: /missing.pem}}\n": `"/missing.pem"`,
		"http: {tls: {cert_file: /c.pem, key_file: /other.pem}}\n":   `cert_file "/c.pem" and key_file "/other.pem"`,
	} {
		if err := loadWith(extra); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", extra, err, want)
		}
	}
}

// Read-only commands need only the Redis settings: no app, no secret, no
// API key need resolve; Redis settings are still checked.
func TestReadOnlyNeedsOnlyRedisSettings(t *testing.T) {
	c, err := config.Load(config.Options{Environ: []string{"TOKENKEEPER_REDIS_ADDRS=10.0.0.1:6379", "TOKENKEEPER_HTTP_ADDR=0.0.0.0:80"}, ReadOnly: true})
	if err != nil || len(c.Apps) != 0 || c.Redis.Addrs[0] != "10.0.0.1:6379" {
		t.Fatalf("Redis settings only: %v", err)
	}
	yaml := "apps: [{id: " + appA + ", secret_file: /nope}, {id: " + appB + ", secret: s}]\nhttp: {api_keys: [{name: ops, key_env: UNSET, apps: ['*']}]}\n"
	c, err = config.Load(config.Options{YAML: []byte(yaml), Environ: []string{}, ReadFile: files(nil), ReadOnly: true})
	if err != nil {
		t.Fatalf("unresolvable secrets refused for a read-only command: %v", err)
	}
	if len(c.Apps) != 2 || c.Apps[0].Secret != "" || len(c.WeChatApps()) != 1 || len(c.HTTP.APIKeys) != 0 {
		t.Fatalf("apps %+v, wechat apps %d, keys %d", c.AppIDs(), len(c.WeChatApps()), len(c.HTTP.APIKeys))
	}
	if _, err := config.Load(config.Options{Environ: []string{"TOKENKEEPER_REDIS_ADDRS=nocolon"}, ReadOnly: true}); err == nil {
		t.Fatal("a bad Redis address accepted")
	}
	if _, err := config.Load(config.Options{YAML: []byte(yaml), Environ: []string{}, ReadFile: files(nil)}); err == nil {
		t.Fatal("serve's load accepted unresolvable secrets")
	}
}

// One knob for a configuration error: the fleet-wide hold, and the
// scheduler's slow retry, every cache.config_hold (default 10m).
func TestConfigHoldDefault(t *testing.T) {
	c, err := load(t, "apps: [{id: "+appA+", secret: s}]\n")
	if err != nil || c.Cache.ConfigHold.String() != "10m0s" {
		t.Fatalf("config hold %v (err %v), want 10m", c.Cache.ConfigHold, err)
	}
}

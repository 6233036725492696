package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Options says where Load reads from. The zero value reads the file named
// by TOKENKEEPER_CONFIG, if any, and the process environment.
type Options struct {
	// File is the YAML file (--config). "" falls back to
	// TOKENKEEPER_CONFIG; if both are empty no file is read.
	File string
	// YAML, when non-nil, is the file's content: File only names it in
	// errors. Tests and the fuzzer use it.
	YAML []byte
	// Environ is the environment as "KEY=value" strings; nil means
	// os.Environ(). It is also where secret_env names are looked up.
	Environ []string
	// Flags overrides keys with the flags registered by RegisterFlags
	// that were set on the command line.
	Flags *pflag.FlagSet
	// ReadFile reads files (the config file, secret_file, key_file,
	// password_file); nil means os.ReadFile.
	ReadFile func(name string) ([]byte, error)
	// Stat reports a secret or key file's mode, to warn about one readable
	// by everyone. Nil means os.Stat when ReadFile is nil too, else no
	// check (a fake filesystem has no modes).
	Stat func(name string) (fs.FileInfo, error)
	// ReadOnly loads for a command that only reads Redis (status, token,
	// invalidate): only the settings that reach Redis and name its keys
	// must be valid. Secrets that cannot be resolved leave their app
	// without one (it cannot fetch), API keys are not read, apps may be
	// none, and the HTTP and metrics sections are not checked.
	ReadOnly bool
}

// flagKeys maps the flags RegisterFlags defines to their keys.
var flagKeys = map[string]string{
	"identity":        "identity",
	"redis-addrs":     "redis.addrs",
	"wechat-base-url": "wechat.base_url",
	"http-addr":       "http.addr",
	"gateway-addr":    "gateway.addr",
	"log-level":       "log.level",
	"log-format":      "log.format",
}

// RegisterFlags defines the flags Load applies on top of the file and the
// environment: --identity, --redis-addrs (comma-separated), --wechat-base-url,
// --http-addr, --gateway-addr, --log-level, --log-format.
func RegisterFlags(fs *pflag.FlagSet) {
	names := make([]string, 0, len(flagKeys))
	for name := range flagKeys {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		key := flagKeys[name]
		fs.String(name, "", fmt.Sprintf("overrides %s (env %s)", key, EnvName(key)))
	}
}

// EnvName is the environment variable of a scalar key, e.g.
// "cache.refresh_ahead" → "TOKENKEEPER_CACHE_REFRESH_AHEAD".
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// EnvVars lists the variables of every scalar key, sorted. The lists'
// variables (TOKENKEEPER_APPS..., TOKENKEEPER_HTTP_API_KEYS...) come on
// top; see the package documentation.
func EnvVars() []string {
	names := []string{EnvPrefix + "CONFIG", EnvPrefix + "APPS", EnvPrefix + "HTTP_API_KEYS", EnvPrefix + "GATEWAY_CREDENTIALS"}
	for key := range defaults {
		names = append(names, EnvName(key))
	}
	sort.Strings(names)
	return names
}

// EnvPart turns an appid or API key name into its part of a variable's
// name: upper case, every character other than A-Z and 0-9 replaced by "_".
func EnvPart(id string) string {
	b := []byte(strings.ToUpper(id))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// AppEnv is the prefix of an app's own variables, e.g. "TOKENKEEPER_APPS_WX1_".
func AppEnv(appID string) string { return EnvPrefix + "APPS_" + EnvPart(appID) + "_" }

// APIKeyEnv is the prefix of an API key's own variables.
func APIKeyEnv(name string) string { return EnvPrefix + "HTTP_API_KEYS_" + EnvPart(name) + "_" }

// GatewayCredentialEnv is the prefix of a gateway credential's own
// variables, e.g. "TOKENKEEPER_GATEWAY_CREDENTIALS_TEAM_A_".
func GatewayCredentialEnv(name string) string {
	return EnvPrefix + "GATEWAY_CREDENTIALS_" + EnvPart(name) + "_"
}

// Load reads the configuration from defaults, the file, the environment
// and flags (in increasing precedence), resolves secrets and validates the
// result. Its errors name the file, the field and, where one exists, the
// environment variable; a validation failure is an *Error listing every
// problem at once.
func Load(o Options) (cfg *Config, err error) {
	defer func() {
		// The YAML and decoding libraries are not ours; a panic on some
		// input must still come out as a configuration error.
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("config: cannot load %s: internal error: %v", describeFile(o.File), r)
		}
	}()
	env := envMap(o.Environ)
	read := o.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	used := map[string]bool{}
	file := o.File
	if file == "" && o.YAML == nil {
		if file = env[EnvPrefix+"CONFIG"]; file != "" {
			used[EnvPrefix+"CONFIG"] = true
		}
	}

	v := viper.New()
	for key, def := range defaults {
		v.SetDefault(key, def)
	}
	if o.YAML != nil || file != "" {
		data := o.YAML
		if data == nil {
			if data, err = read(file); err != nil {
				return nil, fmt.Errorf("config: cannot read config file: %w", err)
			}
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("config: %s is not valid YAML: %w", describeFile(file), unwrapAll(err))
		}
	}
	var envProblems []Problem
	for key, def := range defaults {
		name := EnvName(key)
		val := env[name]
		if val == "" {
			continue
		}
		used[name] = true
		// Type errors are reported here, naming the variable, rather than
		// by the decoder, which knows only the key.
		if reason := checkScalar(def, val); reason != "" {
			envProblems = append(envProblems, Problem{Field: key, Env: name, Reason: reason})
			continue
		}
		v.Set(key, val)
	}
	if len(envProblems) > 0 {
		sort.Slice(envProblems, func(i, j int) bool { return envProblems[i].Field < envProblems[j].Field })
		return nil, &Error{File: file, Problems: envProblems}
	}
	if o.Flags != nil {
		for name, key := range flagKeys {
			if f := o.Flags.Lookup(name); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
	}

	var raw rawConfig
	if err := v.UnmarshalExact(&raw); err != nil {
		return nil, fmt.Errorf("config: %s (with the environment and flags applied): %s", describeFile(file), nameInvalidKeys(unwrapAll(err).Error()))
	}
	applyEnvLists(&raw, env, used)

	stat := o.Stat
	if stat == nil && o.ReadFile == nil {
		stat = os.Stat
	}
	cfg, problems := resolve(&raw, env, read, stat)
	cfg.File = file
	// A secret_env may name a TOKENKEEPER_ variable; it is read, not unused.
	used[raw.Redis.PasswordEnv] = true
	for _, a := range raw.Apps {
		used[a.SecretEnv] = true
	}
	for _, k := range slices.Concat(raw.HTTP.APIKeys, raw.Gateway.Credentials) {
		used[k.KeyEnv] = true
	}
	for name := range env {
		if strings.HasPrefix(name, EnvPrefix) && env[name] != "" && !used[name] {
			cfg.UnusedEnv = append(cfg.UnusedEnv, name)
		}
	}
	sort.Strings(cfg.UnusedEnv)
	// A value that could not be read (a bad duration) is zero: its rules
	// would report it a second time.
	for _, p := range cfg.problems() {
		if !hasField(problems, p.Field) {
			problems = append(problems, p)
		}
	}
	if o.ReadOnly {
		problems = readOnlyProblems(problems)
		cfg.HTTP.APIKeys = nil
	}
	if len(problems) > 0 {
		return nil, &Error{File: file, Problems: problems}
	}
	return cfg, nil
}

// readOnlyProblems keeps the problems that matter to a command that only
// reads Redis: not the apps' secrets, not the HTTP API's or the
// operations listener's settings, not a missing app list.
func readOnlyProblems(ps []Problem) []Problem {
	var out []Problem
	for _, p := range ps {
		switch {
		case p.Field == "apps", strings.HasSuffix(p.Field, ".secret"),
			strings.HasPrefix(p.Field, "http"), strings.HasPrefix(p.Field, "metrics"):
			continue
		}
		out = append(out, p)
	}
	return out
}

func describeFile(file string) string {
	if file == "" {
		return "the configuration"
	}
	return "config file " + strconv.Quote(file)
}

// unwrapAll keeps viper's wrapping out of messages that already say what
// went wrong, while keeping the cause's own text (which holds the line).
// nameInvalidKeys rewrites the key names in a decoder's "'section' has
// invalid keys: a, b" through keySuggestion: a misspelt key is named in full
// with the valid key it misspells, anything else (maybe a secret pasted
// where a key goes) is shortened like a rejected value.
func nameInvalidKeys(msg string) string {
	const marker = "has invalid keys: "
	lines := strings.Split(msg, "\n")
	for i, line := range lines {
		head, keys, ok := strings.Cut(line, marker)
		if !ok {
			continue
		}
		// head is "'section' ", maybe after an indentation or a bullet.
		section := ""
		if _, rest, ok := strings.Cut(head, "'"); ok {
			section, _, _ = strings.Cut(rest, "'")
		}
		names := strings.Split(keys, ", ")
		for j, k := range names {
			names[j] = keySuggestion(section, k)
		}
		lines[i] = head + marker + strings.Join(names, ", ")
	}
	return strings.Join(lines, "\n")
}

func unwrapAll(err error) error {
	var pe viper.ConfigParseError
	if errors.As(err, &pe) {
		if u := pe.Unwrap(); u != nil {
			return u
		}
	}
	return err
}

func envMap(environ []string) map[string]string {
	if environ == nil {
		environ = os.Environ()
	}
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok {
			m[k] = val
		}
	}
	return m
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// applyEnvLists applies TOKENKEEPER_APPS, TOKENKEEPER_HTTP_API_KEYS and
// the per-app and per-key variables to what the file gave.
func applyEnvLists(raw *rawConfig, env map[string]string, used map[string]bool) {
	get := func(name string) (string, bool) {
		val := env[name]
		if val == "" {
			return "", false
		}
		used[name] = true
		return val, true
	}

	if list, ok := get(EnvPrefix + "APPS"); ok {
		fromFile := map[string]rawApp{}
		for _, a := range raw.Apps {
			fromFile[a.ID] = a
		}
		raw.Apps = nil
		for _, item := range splitList(list) {
			id, mode, hasMode := strings.Cut(item, ":")
			id = strings.TrimSpace(id)
			a, ok := fromFile[id]
			if !ok {
				a = rawApp{ID: id}
			}
			if hasMode {
				a.Mode = strings.TrimSpace(mode)
			}
			raw.Apps = append(raw.Apps, a)
		}
	}
	for i := range raw.Apps {
		a := &raw.Apps[i]
		p := AppEnv(a.ID)
		s, okS := get(p + "SECRET")
		se, okE := get(p + "SECRET_ENV")
		sf, okF := get(p + "SECRET_FILE")
		if okS || okE || okF {
			a.Secret, a.SecretEnv, a.SecretFile = s, se, sf
			a.inlineFrom = "env " + p + "SECRET"
		}
		if m, ok := get(p + "MODE"); ok {
			a.Mode = m
		}
		if t, ok := get(p + "TICKETS"); ok {
			a.Tickets = splitList(t)
		}
	}

	applyEnvKeys(&raw.HTTP.APIKeys, EnvPrefix+"HTTP_API_KEYS", APIKeyEnv, get)
	applyEnvKeys(&raw.Gateway.Credentials, EnvPrefix+"GATEWAY_CREDENTIALS", GatewayCredentialEnv, get)
}

// applyEnvKeys applies a list of keys' variables (listVar names the keys;
// prefix(name) starts each key's own _KEY, _KEY_ENV, _KEY_FILE, _APPS) to
// what the file gave: HTTP API keys and gateway credentials alike.
func applyEnvKeys(keys *[]rawAPIKey, listVar string, prefix func(string) string, get func(string) (string, bool)) {
	if list, ok := get(listVar); ok {
		fromFile := map[string]rawAPIKey{}
		for _, k := range *keys {
			fromFile[k.Name] = k
		}
		*keys = nil
		for _, name := range splitList(list) {
			k, ok := fromFile[name]
			if !ok {
				k = rawAPIKey{Name: name}
			}
			*keys = append(*keys, k)
		}
	}
	for i := range *keys {
		k := &(*keys)[i]
		p := prefix(k.Name)
		s, okS := get(p + "KEY")
		se, okE := get(p + "KEY_ENV")
		sf, okF := get(p + "KEY_FILE")
		if okS || okE || okF {
			k.Key, k.KeyEnv, k.KeyFile = s, se, sf
			k.inlineFrom = "env " + p + "KEY"
		}
		if apps, ok := get(p + "APPS"); ok {
			k.Apps = splitList(apps)
		}
		if hosts, ok := get(p + "PAGE_HOSTS"); ok {
			k.PageHosts = splitList(hosts)
		}
		if admin, ok := get(p + "ADMIN"); ok {
			// Anything but a true value leaves the key without admin rights.
			k.Admin, _ = strconv.ParseBool(strings.TrimSpace(admin))
		}
	}
}

// checkScalar says why val cannot be a value of def's type ("" if it can).
func checkScalar(def any, val string) string {
	var err error
	switch def.(type) {
	case int:
		if _, err = strconv.Atoi(strings.TrimSpace(val)); errors.Is(err, strconv.ErrRange) {
			return fmt.Sprintf("%s is too large (or too small): at most %d", shown(val), math.MaxInt)
		}
	case bool:
		_, err = strconv.ParseBool(strings.TrimSpace(val))
	case float64:
		_, err = strconv.ParseFloat(strings.TrimSpace(val), 64)
	default:
		return ""
	}
	if err != nil {
		return fmt.Sprintf("%s is not %s", shown(val), map[string]string{"int": "an integer", "bool": "true or false", "float64": "a number"}[fmt.Sprintf("%T", def)])
	}
	return ""
}

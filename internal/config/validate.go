package config

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenkeeper/tokenkeeper/pkg/fieldcheck"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// MinAPIKeyLen is the shortest API key accepted (the HTTP API's rule).
const MinAPIKeyLen = 16

// Problem is one thing wrong with the configuration.
type Problem struct {
	// Field is the key's path, e.g. "lease.renew_deadline" or
	// "apps[1] (wx2).secret".
	Field string
	// Env is the environment variable that sets the field, if there is one.
	Env string
	// Reason says what is wrong and what would be right. It never holds a
	// secret.
	Reason string
}

func (p Problem) String() string {
	s := p.Field + ": " + p.Reason
	if p.Env != "" {
		s += " (env " + p.Env + ")"
	}
	return s
}

// Error lists every problem found in one configuration.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration")
	if e.File != "" {
		b.WriteString(" (file " + strconv.Quote(e.File) + ")")
	}
	b.WriteString(":")
	for _, p := range e.Problems {
		b.WriteString("\n  - " + p.String())
	}
	return b.String()
}

// resolve turns the decoded file into a Config: durations parsed, secrets
// read from where they are, modes and levels parsed. What cannot be
// resolved becomes a Problem.
func resolve(raw *rawConfig, env map[string]string, read func(string) ([]byte, error)) (*Config, []Problem) {
	var ps []Problem
	add := func(field, envName, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Env: envName, Reason: fmt.Sprintf(format, args...)})
	}
	dur := func(key, s string) time.Duration {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			add(key, EnvName(key), "%s is not a duration (write e.g. 300ms, 15s, 5m)", shown(s))
		}
		return d
	}

	c := &Config{Identity: strings.TrimSpace(raw.Identity)}
	if c.Identity == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "refresher"
		}
		c.Identity = host + "-" + strconv.Itoa(os.Getpid())
	}

	for _, a := range raw.Redis.Addrs {
		if a = strings.TrimSpace(a); a != "" {
			c.Redis.Addrs = append(c.Redis.Addrs, a)
		}
	}
	c.Redis.Username = raw.Redis.Username
	c.Redis.DB = raw.Redis.DB
	c.Redis.TLS = raw.Redis.TLS
	c.Redis.MasterName = raw.Redis.MasterName
	c.Redis.Password, c.Redis.PasswordFrom = resolveSecret(secretSpec{
		field: "redis.password", envBase: EnvPrefix + "REDIS_PASSWORD", optional: true,
		inline: raw.Redis.Password, envRef: raw.Redis.PasswordEnv, file: raw.Redis.PasswordFile,
		inlineFrom: inlineEnv(env, "redis.password"),
	}, env, read, add)

	c.WeChat.BaseURL = strings.TrimSpace(raw.WeChat.BaseURL)
	c.WeChat.Timeout = dur("wechat.timeout", raw.WeChat.Timeout)

	for i, a := range raw.Apps {
		id := strings.TrimSpace(a.ID)
		field := fmt.Sprintf("apps[%d] (%s)", i, id)
		app := App{ID: id}
		mode, err := wechat.ParseMode(strings.TrimSpace(a.Mode))
		if err != nil {
			add(field+".mode", AppEnv(id)+"MODE", "unknown mode %s: want classic or stable", shown(a.Mode))
		}
		app.Mode = mode
		app.Secret, app.SecretFrom = resolveSecret(secretSpec{
			field: field + ".secret", envBase: AppEnv(id) + "SECRET",
			inline: a.Secret, envRef: a.SecretEnv, file: a.SecretFile, inlineFrom: a.inlineFrom,
		}, env, read, add)
		c.Apps = append(c.Apps, app)
	}

	c.Cache = tokencache.DefaultConfig()
	c.Cache.KeyPrefix = raw.Cache.KeyPrefix
	c.Cache.RefreshAhead = dur("cache.refresh_ahead", raw.Cache.RefreshAhead)
	c.Cache.Margin = dur("cache.margin", raw.Cache.Margin)
	c.Cache.Overlap = dur("cache.overlap", raw.Cache.Overlap)
	c.Cache.LockTTL = dur("cache.lock_ttl", raw.Cache.LockTTL)
	c.Cache.FetchTimeout = dur("cache.fetch_timeout", raw.Cache.FetchTimeout)
	c.Cache.NearMaxAge = dur("cache.near_max_age", raw.Cache.NearMaxAge)
	c.Cache.DailyBudget = raw.Cache.DailyBudget
	c.Lease = Lease{
		Name:          raw.Lease.Name,
		Duration:      dur("lease.duration", raw.Lease.Duration),
		RenewDeadline: dur("lease.renew_deadline", raw.Lease.RenewDeadline),
		RetryPeriod:   dur("lease.retry_period", raw.Lease.RetryPeriod),
	}

	c.HTTP.Addr = strings.TrimSpace(raw.HTTP.Addr)
	c.HTTP.InvalidateRate = raw.HTTP.InvalidateRate
	for i, k := range raw.HTTP.APIKeys {
		name := strings.TrimSpace(k.Name)
		field := fmt.Sprintf("http.api_keys[%d] (%s)", i, name)
		key := APIKey{Name: name}
		for _, app := range k.Apps {
			if app = strings.TrimSpace(app); app != "" {
				key.Apps = append(key.Apps, app)
			}
		}
		key.Key, key.KeyFrom = resolveSecret(secretSpec{
			field: field + ".key", envBase: APIKeyEnv(name) + "KEY", sourceNames: [3]string{"key", "key_env", "key_file"},
			inline: k.Key, envRef: k.KeyEnv, file: k.KeyFile, inlineFrom: k.inlineFrom,
		}, env, read, add)
		c.HTTP.APIKeys = append(c.HTTP.APIKeys, key)
	}

	c.Scheduler.MaxConcurrent = raw.Scheduler.MaxConcurrent
	c.Metrics.PerApp = strings.ToLower(strings.TrimSpace(raw.Metrics.PerApp))

	c.Log.Format = strings.ToLower(strings.TrimSpace(raw.Log.Format))
	switch lvl := strings.ToLower(strings.TrimSpace(raw.Log.Level)); lvl {
	case "debug":
		c.Log.Level = slog.LevelDebug
	case "info":
		c.Log.Level = slog.LevelInfo
	case "warn":
		c.Log.Level = slog.LevelWarn
	case "error":
		c.Log.Level = slog.LevelError
	default:
		add("log.level", EnvName("log.level"), "unknown level %s: want debug, info, warn or error", shown(raw.Log.Level))
	}
	return c, ps
}

type secretSpec struct {
	field, envBase string
	// sourceNames are the three keys' names; zero means secret,
	// secret_env, secret_file (password, ... for Redis).
	sourceNames          [3]string
	optional             bool
	inline, envRef, file string
	inlineFrom           string // default "inline"

}

// resolveSecret reads a secret from exactly one of its three sources.
func resolveSecret(s secretSpec, env map[string]string, read func(string) ([]byte, error), add func(field, env, format string, args ...any)) (wechat.Secret, string) {
	names := s.sourceNames
	if names[0] == "" {
		base := s.field[strings.LastIndexByte(s.field, '.')+1:]
		names = [3]string{base, base + "_env", base + "_file"}
	}
	set := 0
	for _, v := range []string{s.inline, s.envRef, s.file} {
		if v != "" {
			set++
		}
	}
	envs := s.envBase + ", " + s.envBase + "_ENV or " + s.envBase + "_FILE"
	switch {
	case set == 0 && s.optional:
		return "", ""
	case set == 0:
		add(s.field, envs, "missing: set exactly one of %s, %s, %s", names[0], names[1], names[2])
		return "", ""
	case set > 1:
		add(s.field, envs, "%d sources given: set exactly one of %s, %s, %s", set, names[0], names[1], names[2])
		return "", ""
	}
	switch {
	case s.inline != "":
		if s.inlineFrom != "" {
			return wechat.Secret(s.inline), s.inlineFrom
		}
		return wechat.Secret(s.inline), "inline"
	case s.envRef != "":
		val := env[s.envRef]
		if val == "" {
			add(s.field, s.envBase+"_ENV", "%s names the environment variable %s, which is not set or empty", names[1], shown(s.envRef))
			return "", ""
		}
		return wechat.Secret(val), "env " + s.envRef
	default:
		data, err := read(s.file)
		if err != nil {
			// A read error names the path, never the content.
			add(s.field, s.envBase+"_FILE", "%s %s: %s", names[2], shown(s.file), readFailure(err))
			return "", ""
		}
		val := strings.TrimRight(string(data), "\r\n")
		if strings.TrimSpace(val) == "" {
			add(s.field, s.envBase+"_FILE", "%s %s is empty", names[2], shown(s.file))
			return "", ""
		}
		return wechat.Secret(val), "file " + s.file
	}
}

// Validate checks a Config built by hand (Load already calls it).
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return &Error{File: c.File, Problems: ps}
	}
	return nil
}

// problems checks every rule that spans fields or concerns values, and
// returns all violations.
func (c *Config) problems() []Problem {
	var ps []Problem
	add := func(field, envName, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Env: envName, Reason: fmt.Sprintf(format, args...)})
	}

	// Redis.
	if len(c.Redis.Addrs) == 0 {
		add("redis.addrs", EnvName("redis.addrs"), "no Redis address: give at least one host:port")
	}
	for i, a := range c.Redis.Addrs {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || !validPort(port) {
			add(fmt.Sprintf("redis.addrs[%d]", i), EnvName("redis.addrs"), "%s is not host:port", shown(a))
		}
	}
	if c.Redis.DB < 0 {
		add("redis.db", EnvName("redis.db"), "%d: must not be negative", c.Redis.DB)
	}
	if c.Redis.DB != 0 && len(c.Redis.Addrs) > 1 && c.Redis.MasterName == "" {
		add("redis.db", EnvName("redis.db"), "%d: a Redis Cluster (several addrs, no master_name) has only database 0", c.Redis.DB)
	}

	// WeChat.
	switch u, err := url.Parse(c.WeChat.BaseURL); {
	case err == nil && (u.User != nil || u.RawQuery != "" || u.Fragment != ""):
		// Not shown: user info or a query is where a password would be.
		add("wechat.base_url", EnvName("wechat.base_url"), "must not carry user info, a query or a fragment (the URL is not shown: it may hold a password); give scheme://host[:port][/path]")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		add("wechat.base_url", EnvName("wechat.base_url"), "%s is not an http(s) URL", shown(c.WeChat.BaseURL))
	}
	if c.WeChat.Timeout <= 0 {
		add("wechat.timeout", EnvName("wechat.timeout"), "%v: must be positive", c.WeChat.Timeout)
	}

	// Apps.
	if len(c.Apps) == 0 {
		add("apps", EnvPrefix+"APPS", "no app configured: list at least one (id, secret, mode)")
	}
	seen := map[string]int{}
	envSeen := map[string]string{}
	for i, a := range c.Apps {
		field := fmt.Sprintf("apps[%d] (%s)", i, a.ID)
		if reason := appIDProblem(a.ID); reason != "" {
			add(field+".id", EnvPrefix+"APPS", "%s", reason)
			continue
		}
		if j, dup := seen[a.ID]; dup {
			add(field+".id", EnvPrefix+"APPS", "duplicate appid: apps[%d] has it too", j)
		}
		seen[a.ID] = i
		if other, clash := envSeen[EnvPart(a.ID)]; clash && other != a.ID {
			add(field+".id", EnvPrefix+"APPS", "appids %q and %q share the variable prefix %s", other, a.ID, AppEnv(a.ID))
		}
		envSeen[EnvPart(a.ID)] = a.ID
		if a.Mode != wechat.Classic && a.Mode != wechat.Stable {
			add(field+".mode", AppEnv(a.ID)+"MODE", "unknown mode %d", int(a.Mode))
		}
	}

	// Cache and lease: the rules of tokencache.Config and lock.ElectorConfig,
	// under this file's keys.
	addRules := func(err error, keys map[string]string) {
		var fe *fieldcheck.Error
		if !errors.As(err, &fe) {
			return
		}
		name := func(field string) string {
			if k, ok := keys[field]; ok {
				return k
			}
			return field
		}
		for _, p := range fe.Problems {
			key := name(p.Field)
			add(key, EnvName(key), "%s", p.Text(name))
		}
	}
	addRules(c.Cache.Validate(), cacheKeys)
	addRules(c.ElectorConfig(nil, lock.LeaderCallbacks{}, nil).Validate(), leaseKeys)

	if n := c.Scheduler.MaxConcurrent; n < 1 || n > MaxConcurrentLimit {
		add("scheduler.max_concurrent", EnvName("scheduler.max_concurrent"), "%d: must be 1 to %d (refreshes under way at once)", n, MaxConcurrentLimit)
	}
	switch c.Metrics.PerApp {
	case "auto", "on", "off":
	default:
		add("metrics.per_app", EnvName("metrics.per_app"), "%s: want auto, on or off", shown(c.Metrics.PerApp))
	}

	// HTTP.
	if host, port, err := net.SplitHostPort(c.HTTP.Addr); err != nil || !validPort(port) {
		_ = host
		add("http.addr", EnvName("http.addr"), "%s is not host:port (e.g. 127.0.0.1:8080 or :8080)", shown(c.HTTP.Addr))
	}
	if !(c.HTTP.InvalidateRate > 0) {
		add("http.invalidate_rate", EnvName("http.invalidate_rate"), "%v: must be positive (reports per API key per second)", c.HTTP.InvalidateRate)
	}
	names := map[string]int{}
	for i, k := range c.HTTP.APIKeys {
		field := fmt.Sprintf("http.api_keys[%d] (%s)", i, k.Name)
		p := APIKeyEnv(k.Name)
		if k.Name == "" {
			add(field+".name", EnvPrefix+"HTTP_API_KEYS", "must not be empty: it names the key in logs")
		} else if j, dup := names[k.Name]; dup {
			add(field+".name", EnvPrefix+"HTTP_API_KEYS", "duplicate name: http.api_keys[%d] has it too", j)
		} else {
			names[k.Name] = i
		}
		if k.Key != "" && len(k.Key.Reveal()) < MinAPIKeyLen {
			add(field+".key", p+"KEY", "too short (%d characters): use at least %d random characters, e.g. openssl rand -hex 24", len(k.Key.Reveal()), MinAPIKeyLen)
		}
		if len(k.Apps) == 0 {
			add(field+".apps", p+"APPS", "the key may read no app: list appids or \"*\"")
		}
		for _, app := range k.Apps {
			if _, ok := seen[app]; !ok && app != "*" {
				add(field+".apps", p+"APPS", "unknown appid %s: not in apps", shown(app))
			}
		}
		for j := range i {
			o := c.HTTP.APIKeys[j]
			if k.Key != "" && subtle.ConstantTimeCompare([]byte(k.Key.Reveal()), []byte(o.Key.Reveal())) == 1 {
				add(field+".key", p+"KEY", "same key as http.api_keys[%d] (%s): give each client its own", j, o.Name)
			}
		}
	}

	// Log.
	switch c.Log.Level {
	case slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError:
	default:
		if !hasField(ps, "log.level") {
			add("log.level", EnvName("log.level"), "unknown level %v: want debug, info, warn or error", c.Log.Level)
		}
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		add("log.format", EnvName("log.format"), "unknown format %s: want text or json", shown(c.Log.Format))
	}
	return ps
}

func hasField(ps []Problem, field string) bool {
	for _, p := range ps {
		if p.Field == field {
			return true
		}
	}
	return false
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535
}

// appIDProblem applies tokencache's rule for appids (they name Redis keys).
func appIDProblem(id string) string {
	if reason := tokencache.AppIDProblem(id); reason != "" {
		return fmt.Sprintf("appid %s: %s", shown(id), reason)
	}
	return ""
}

// inlineEnv labels an inline value that came from the key's own variable.
func inlineEnv(env map[string]string, key string) string {
	if env[EnvName(key)] != "" {
		return "env " + EnvName(key)
	}
	return ""
}

// shownMax is the longest rejected value a Problem quotes in full.
const shownMax = 12

// shown quotes a rejected value for an error message. Someone may have
// pasted a secret into the wrong setting, and the error that rejects it
// must not print it: a value longer than shownMax characters is shown only
// by its first four characters and its length.
func shown(v string) string {
	if utf8.RuneCountInString(v) <= shownMax {
		return strconv.Quote(v)
	}
	r := []rune(v)
	return fmt.Sprintf("%q (%d characters, the rest not shown)", string(r[:4])+"…", len(r))
}

// readFailure says why a file could not be read without repeating its path
// (which shown already gave, shortened).
func readFailure(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return "cannot read it"
}

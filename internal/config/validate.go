package config

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenkeeper/tokenkeeper/pkg/fieldcheck"
	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
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
func resolve(raw *rawConfig, env map[string]string, read func(string) ([]byte, error), stat func(string) (fs.FileInfo, error)) (*Config, []Problem) {
	var ps []Problem
	var warnings []string
	files := fileReader{read: read, stat: stat, warn: func(w string) { warnings = append(warnings, w) }}
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
	}, env, files, add)
	resolveRedisExtra(&c.Redis, &raw.Redis, read)

	c.WeChat.BaseURL = strings.TrimSpace(raw.WeChat.BaseURL)
	c.WeChat.Timeout = dur("wechat.timeout", raw.WeChat.Timeout)

	for i, a := range raw.Apps {
		id := strings.TrimSpace(a.ID)
		field := appLabel(i, id)
		app := App{ID: id}
		mode, err := wechat.ParseMode(strings.TrimSpace(a.Mode))
		if err != nil {
			add(field+".mode", appEnv(id)+"MODE", "unknown mode %s: want classic or stable", shown(a.Mode))
		}
		app.Mode = mode
		seenKinds := map[string]bool{}
		for _, kind := range a.Tickets {
			kind = strings.TrimSpace(kind)
			switch {
			case wechat.TicketKindProblem(kind) != "":
				add(field+".tickets", AppEnv(id)+"TICKETS", "%s", wechat.TicketKindProblem(kind))
			case seenKinds[kind]:
				add(field+".tickets", AppEnv(id)+"TICKETS", "ticket kind %q listed twice", kind)
			default:
				app.Tickets = append(app.Tickets, kind)
			}
			seenKinds[kind] = true
		}
		app.Secret, app.SecretFrom = resolveSecret(secretSpec{
			field: field + ".secret", envBase: appEnv(id) + "SECRET",
			inline: a.Secret, envRef: a.SecretEnv, file: a.SecretFile, inlineFrom: a.inlineFrom,
		}, env, files, add)
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
	c.Cache.DailyBudget = parseBudget(raw.Cache.DailyBudget, add)
	c.Cache.ConfigHold = dur("cache.config_hold", raw.Cache.ConfigHold)
	c.Lease = Lease{
		Name:          raw.Lease.Name,
		Duration:      dur("lease.duration", raw.Lease.Duration),
		RenewDeadline: dur("lease.renew_deadline", raw.Lease.RenewDeadline),
		RetryPeriod:   dur("lease.retry_period", raw.Lease.RetryPeriod),
	}

	c.HTTP.Addr = strings.TrimSpace(raw.HTTP.Addr)
	c.HTTP.InvalidateRate = raw.HTTP.InvalidateRate
	c.HTTP.AllowUnauthenticated = raw.HTTP.AllowUnauthenticated
	c.HTTP.TLS = TLSFiles{CertFile: strings.TrimSpace(raw.HTTP.TLS.CertFile), KeyFile: strings.TrimSpace(raw.HTTP.TLS.KeyFile)}
	c.Metrics.Addr = strings.TrimSpace(raw.Metrics.Addr)
	if t := c.HTTP.TLS; t.CertFile != "" && t.KeyFile != "" {
		cert, errC := files.read(t.CertFile)
		key, errK := files.read(t.KeyFile)
		switch {
		case errC != nil:
			add("http.tls.cert_file", EnvName("http.tls.cert_file"), "%s: %s", shownPath(t.CertFile), readFailure(errC))
		case errK != nil:
			add("http.tls.key_file", EnvName("http.tls.key_file"), "%s: %s", shownPath(t.KeyFile), readFailure(errK))
		default:
			// tls's errors describe the PEM blocks, never the key.
			if _, err := tls.X509KeyPair(cert, key); err != nil {
				add("http.tls", EnvName("http.tls.cert_file"), "cert_file %s and key_file %s: %v", shownPath(t.CertFile), shownPath(t.KeyFile), err)
			}
		}
	}
	c.HTTP.APIKeys = resolveKeys("http.api_keys", raw.HTTP.APIKeys, APIKeyEnv, env, files, add)

	c.Gateway = Gateway{
		Addr:            strings.TrimSpace(raw.Gateway.Addr),
		Credentials:     resolveKeys("gateway.credentials", raw.Gateway.Credentials, GatewayCredentialEnv, env, files, add),
		AcceptAppSecret: raw.Gateway.AcceptAppSecret,
		MaxBody:         raw.Gateway.MaxBody,
		RetryBuffer:     raw.Gateway.RetryBuffer,
		Timeout:         dur("gateway.timeout", raw.Gateway.Timeout),
		MaxConcurrent:   raw.Gateway.MaxConcurrent,
		AccessLog:       raw.Gateway.AccessLog,
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
	c.Warnings = warnings
	return c, ps
}

// resolveKeys resolves a list of keys (HTTP API keys, gateway
// credentials) under section; prefix(name) starts each key's variables.
func resolveKeys(section string, raw []rawAPIKey, prefix func(string) string, env map[string]string, files fileReader, add func(field, env, format string, args ...any)) []APIKey {
	var keys []APIKey
	for i, k := range raw {
		name := strings.TrimSpace(k.Name)
		field := keyLabel(section, i, name)
		key := APIKey{Name: name, Admin: k.Admin}
		for _, app := range k.Apps {
			if app = strings.TrimSpace(app); app != "" {
				key.Apps = append(key.Apps, app)
			}
		}
		for _, h := range k.PageHosts {
			if h = strings.ToLower(strings.TrimSpace(h)); jssdk.PageHostProblem(h) != "" {
				add(field+".page_hosts", keyEnv(prefix, section, name)+"PAGE_HOSTS", "page host %s: %s", shown(h), jssdk.PageHostProblem(h))
			} else {
				key.PageHosts = append(key.PageHosts, h)
			}
		}
		key.Key, key.KeyFrom = resolveSecret(secretSpec{
			field: field + ".key", envBase: keyEnv(prefix, section, name) + "KEY", sourceNames: [3]string{"key", "key_env", "key_file"},
			inline: k.Key, envRef: k.KeyEnv, file: k.KeyFile, inlineFrom: k.inlineFrom,
		}, env, files, add)
		keys = append(keys, key)
	}
	return keys
}

// parseBudget reads daily_budget, reporting an overflow as one (the
// decoder would wrap it around to a negative number).
func parseBudget(s string, add func(field, env, format string, args ...any)) int {
	const key = "cache.daily_budget"
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 0)
	switch {
	case err == nil:
		return int(n)
	case errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-"):
		add(key, EnvName(key), "%s is too large: at most %d (WeChat allows 2000 classic fetches a day; 0 = no cap)", shown(s), math.MaxInt)
	case errors.Is(err, strconv.ErrRange):
		add(key, EnvName(key), "%s is out of range: must not be negative (0 = no cap)", shown(s))
	default:
		add(key, EnvName(key), "%s is not an integer", shown(s))
	}
	return 0
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

// fileReader reads secret and key files, and warns (through warn) about one
// readable by everyone.
type fileReader struct {
	read func(string) ([]byte, error)
	stat func(string) (fs.FileInfo, error) // nil: no mode check
	warn func(string)
}

// resolveSecret reads a secret from exactly one of its three sources.
func resolveSecret(s secretSpec, env map[string]string, files fileReader, add func(field, env, format string, args ...any)) (wechat.Secret, string) {
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
		// A path is not a secret: it is named in full, so the operator
		// finds the file. The content is never quoted.
		path := shownPath(s.file)
		data, err := files.read(s.file)
		if err != nil {
			add(s.field, s.envBase+"_FILE", "%s %s: %s", names[2], path, readFailure(err))
			return "", ""
		}
		val, problem := fileSecret(data)
		if problem != "" {
			add(s.field, s.envBase+"_FILE", "%s %s %s", names[2], path, problem)
			return "", ""
		}
		if files.stat != nil {
			if fi, err := files.stat(s.file); err == nil && fi.Mode().Perm()&0o004 != 0 {
				files.warn(fmt.Sprintf("%s: %s %s is readable by everyone (mode %04o): chmod o-r it", s.field, names[2], path, fi.Mode().Perm()))
			}
		}
		return wechat.Secret(val), "file " + s.file
	}
}

// fileSecret is a secret file's content without its one trailing newline
// ("\n" or "\r\n", as editors and `echo` write it), or why the content is
// refused. Any other whitespace is refused rather than trimmed: a key with
// a trailing space compares unequal to what clients send (every request
// 401), and a second line is most likely a file holding something else.
// The reason gives offsets and byte values, never the content.
func fileSecret(data []byte) (string, string) {
	s := string(data)
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		s = t
	} else {
		s = strings.TrimSuffix(s, "\n")
	}
	if strings.TrimSpace(s) == "" {
		return "", "is empty"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n' || c == '\r':
			return "", fmt.Sprintf("has more than one line (a line break at byte %d): it must hold the secret alone, with at most one trailing newline", i)
		case c == ' ' || c == '\t' || c == '\v' || c == '\f':
			return "", fmt.Sprintf("has whitespace (byte 0x%02x at offset %d of %d): it must hold the secret alone, with at most one trailing newline; nothing is trimmed but that newline", c, i, len(s))
		case c < 0x20 || c == 0x7f:
			return "", fmt.Sprintf("has a control character (byte 0x%02x at offset %d)", c, i)
		}
	}
	return s, ""
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
	if c.Redis.DB != 0 && c.Redis.Cluster() {
		add("redis.db", EnvName("redis.db"), "%d: a Redis Cluster (several addrs, no master_name) has only database 0", c.Redis.DB)
	}
	c.redisProblems(add)

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
		field := appLabel(i, a.ID)
		if reason := appIDProblem(a.ID, isWeChat(c.WeChat.BaseURL)); reason != "" {
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
	if !(c.HTTP.InvalidateRate > 0) || math.IsInf(c.HTTP.InvalidateRate, 0) {
		// +Inf would be rate.Inf: no limit at all.
		add("http.invalidate_rate", EnvName("http.invalidate_rate"), "%v: must be a finite positive number (reports per API key per second)", c.HTTP.InvalidateRate)
	}
	if len(c.HTTP.APIKeys) == 0 && !c.HTTP.AllowUnauthenticated && !isLoopback(c.HTTP.Addr) {
		add("http.api_keys", EnvPrefix+"HTTP_API_KEYS", "none configured while http.addr %s listens beyond loopback: anyone who can reach it could read every token; configure API keys, listen on 127.0.0.1, or set http.allow_unauthenticated: true", strconv.Quote(c.HTTP.Addr))
	}
	if t := c.HTTP.TLS; t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		add("http.tls", EnvName("http.tls.cert_file"), "give both cert_file and key_file, or neither")
	}
	if a := c.Metrics.Addr; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || !validPort(port) {
			add("metrics.addr", EnvName("metrics.addr"), "%s is not host:port (e.g. 127.0.0.1:9090 or :9090)", shown(a))
		} else if a == c.HTTP.Addr && port != "0" { // port 0: each gets its own
			add("metrics.addr", EnvName("metrics.addr"), "%s is http.addr too: give the operations listener an address of its own, or leave it empty", strconv.Quote(a))
		}
	}
	ps = append(ps, keyProblems("http.api_keys", EnvPrefix+"HTTP_API_KEYS", APIKeyEnv, c.HTTP.APIKeys, seen)...)

	// Gateway (off while addr is empty).
	if g := c.Gateway; g.Addr != "" || len(g.Credentials) > 0 {
		if _, port, err := net.SplitHostPort(g.Addr); err != nil || !validPort(port) {
			add("gateway.addr", EnvName("gateway.addr"), "%s is not host:port (e.g. 127.0.0.1:8090 or :8090)", shown(g.Addr))
		} else if g.Addr == c.HTTP.Addr {
			add("gateway.addr", EnvName("gateway.addr"), "%s is http.addr too: the gateway needs a listener of its own", shown(g.Addr))
		}
		if len(g.Credentials) == 0 && !g.AcceptAppSecret {
			add("gateway.credentials", EnvPrefix+"GATEWAY_CREDENTIALS", "none, and gateway.accept_app_secret is off: no SDK could authenticate; give each client a credential")
		}
		ps = append(ps, keyProblems("gateway.credentials", EnvPrefix+"GATEWAY_CREDENTIALS", GatewayCredentialEnv, g.Credentials, seen)...)
		for i, k := range g.Credentials {
			for _, a := range c.Apps {
				if k.Key != "" && a.Secret != "" && subtle.ConstantTimeCompare([]byte(k.Key.Reveal()), []byte(a.Secret.Reveal())) == 1 {
					add(fmt.Sprintf("gateway.credentials[%d] (%s).key", i, k.Name), GatewayCredentialEnv(k.Name)+"KEY",
						"is app %s's AppSecret: a credential must be its own, so the AppSecret can stay in the refresher", a.ID)
				}
			}
		}
		for _, f := range []struct {
			key string
			v   int64
		}{{"gateway.max_body", g.MaxBody}, {"gateway.retry_buffer", g.RetryBuffer}, {"gateway.max_concurrent", int64(g.MaxConcurrent)}} {
			if f.v <= 0 {
				add(f.key, EnvName(f.key), "%d: must be positive", f.v)
			}
		}
		if g.RetryBuffer > g.MaxBody && g.MaxBody > 0 {
			add("gateway.retry_buffer", EnvName("gateway.retry_buffer"), "%d must not exceed gateway.max_body %d", g.RetryBuffer, g.MaxBody)
		}
		if g.Timeout <= 0 && !hasField(ps, "gateway.timeout") {
			add("gateway.timeout", EnvName("gateway.timeout"), "%v: must be positive", g.Timeout)
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

// keyProblems checks a list of keys under section (HTTP API keys, gateway
// credentials): named, unique, long enough, distinct, allowed known apps.
// apps maps the configured appids.
func keyProblems(section, listVar string, prefix func(string) string, keys []APIKey, apps map[string]int) []Problem {
	var ps []Problem
	add := func(field, envName, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Env: envName, Reason: fmt.Sprintf(format, args...)})
	}
	names := map[string]int{}
	for i, k := range keys {
		field := keyLabel(section, i, k.Name)
		p := keyEnv(prefix, section, k.Name)
		if k.Name == "" {
			add(field+".name", listVar, "must not be empty: it names the key in logs")
		} else if reason := apiKeyNameProblem(k.Name); reason != "" {
			add(field+".name", listVar, "%s %s", shown(k.Name), reason)
		} else if j, dup := names[k.Name]; dup {
			add(field+".name", listVar, "duplicate name: %s[%d] has it too", section, j)
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
			if _, ok := apps[app]; !ok && app != "*" {
				shownApp := shown(app)
				if displayableID(app) {
					shownApp = strconv.Quote(app)
				}
				add(field+".apps", p+"APPS", "unknown appid %s: not in apps", shownApp)
			}
		}
		for j := range i {
			o := keys[j]
			if k.Key != "" && subtle.ConstantTimeCompare([]byte(k.Key.Reveal()), []byte(o.Key.Reveal())) == 1 {
				add(field+".key", p+"KEY", "same key as %s: give each client its own", keyLabel(section, j, o.Name))
			}
		}
	}
	return ps
}

// isLoopback reports whether a listen address binds only loopback
// ("127.0.0.1:8080", "[::1]:8080", "localhost:8080"); ":8080" binds every
// interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

// appIDProblem applies tokencache's rule for appids (they name Redis keys)
// and WeChat's (wechat.AppIDProblem). WeChat's shape is required of apps
// fetched from WeChat itself (wechatShape); a test or relay upstream may
// name its apps as it likes, but an appid shaped like an AppSecret is
// refused whatever the upstream.
func appIDProblem(id string, wechatShape bool) string {
	if reason := tokencache.AppIDProblem(id); reason != "" {
		return fmt.Sprintf("appid %s: %s", shown(id), reason)
	}
	if reason := wechat.AppIDProblem(id); reason != "" && (wechatShape || wechat.LooksLikeAppSecret(id)) {
		return fmt.Sprintf("appid %s %s", shown(id), reason)
	}
	return ""
}

// isWeChat reports whether baseURL is WeChat's own API host, whose appids
// all have WeChat's shape.
func isWeChat(baseURL string) bool {
	u, err := url.Parse(baseURL)
	def, _ := url.Parse(wechat.DefaultBaseURL)
	return err == nil && strings.EqualFold(u.Hostname(), def.Hostname())
}

// displayableID reports whether an appid may be printed in full: it may be
// the AppSecret, pasted into TOKENKEEPER_APPS.
func displayableID(id string) bool {
	return tokencache.AppIDProblem(id) == "" && !wechat.LooksLikeAppSecret(id)
}

// appLabel names apps[i] in a Problem: with its appid when that is
// displayable, else with the appid shortened by shown.
func appLabel(i int, id string) string {
	if displayableID(id) {
		return fmt.Sprintf("apps[%d] (%s)", i, id)
	}
	return fmt.Sprintf("apps[%d] (%s)", i, shown(id))
}

// appEnv is AppEnv for a Problem: a variable named after an invalid appid
// would spell the appid out in full, so such an app is pointed to by
// placeholder.
func appEnv(id string) string {
	if displayableID(id) {
		return AppEnv(id)
	}
	return EnvPrefix + "APPS_<APPID>_"
}

// maxAPIKeyNameLen bounds an API key's name.
const maxAPIKeyNameLen = 32

// apiKeyNameProblem is the rule for API key names: they appear in logs and
// metrics, and in variable names, so they are short words: a lower-case
// letter, then lower-case letters, digits, '-', '_' or '.'. Most random
// keys (base64, or hex longer than 32) break it, so a key pasted where its
// name goes is refused and not printed.
func apiKeyNameProblem(name string) string {
	if name == "" || len(name) > maxAPIKeyNameLen || name[0] < 'a' || name[0] > 'z' {
		return fmt.Sprintf("is not a name: 1 to %d characters, starting with a lower-case letter (e.g. billing-backend); is it a key pasted where its name goes?", maxAPIKeyNameLen)
	}
	hex := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "is not a name: only lower-case letters, digits, '-', '_' and '.' are allowed; is it a key pasted where its name goes?"
		}
		hex = hex && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f')
	}
	if hex && len(name) >= MinAPIKeyLen {
		// `openssl rand -hex 16`, the key this package suggests, is one.
		return fmt.Sprintf("is not a name: %d hexadecimal digits look like a key pasted where its name goes", len(name))
	}
	return ""
}

// keyLabel names section[i] (http.api_keys, gateway.credentials) in a
// Problem, like appLabel: a name that may be a pasted key is not shown.
func keyLabel(section string, i int, name string) string {
	if apiKeyNameProblem(name) == "" {
		return fmt.Sprintf("%s[%d] (%s)", section, i, name)
	}
	return fmt.Sprintf("%s[%d] (%s)", section, i, shown(name))
}

// keyEnv is prefix(name) (APIKeyEnv, GatewayCredentialEnv) for a Problem,
// like appEnv: a placeholder where the name may be a pasted key.
func keyEnv(prefix func(string) string, section, name string) string {
	if apiKeyNameProblem(name) == "" {
		return prefix(name)
	}
	return EnvName(section) + "_<NAME>_"
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

// shownPath quotes a file's path for a message: in full, so the operator
// finds the file, when it looks like one (it has a '/', or is short);
// otherwise like any rejected value (shown), as it may be the secret
// itself pasted where its path goes.
func shownPath(p string) string {
	if strings.ContainsRune(p, '/') {
		return strconv.Quote(p)
	}
	return shown(p)
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

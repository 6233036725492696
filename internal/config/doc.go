// Package config loads, validates and prints the refresher's configuration,
// and maps it onto the options of the libraries it wires together
// (tokencache, lock, go-redis, wechat).
//
// # Sources and precedence
//
// Defaults < YAML file (--config, or TOKENKEEPER_CONFIG) < environment <
// flags (RegisterFlags: --identity, --redis-addrs, --wechat-base-url,
// --http-addr, --gateway-addr, --log-level, --log-format). Every key works from the
// environment alone, so a container needs no file at all. A key the file
// misspells is an error, not silently ignored, that names the key in full
// and suggests the valid key of its section it is a near miss of (an unknown
// key that is no near miss may be a pasted secret and is shortened like a
// rejected value; see keySuggestion); testdata/config in the repository
// holds commented examples.
//
// # Environment scheme
//
// A scalar key's variable is TOKENKEEPER_ followed by its path in upper
// case with "." and nothing else replaced by "_": cache.refresh_ahead is
// TOKENKEEPER_CACHE_REFRESH_AHEAD, redis.addrs (a list) is
// TOKENKEEPER_REDIS_ADDRS="host1:6379,host2:6379". EnvVars lists them all.
// An empty variable counts as unset.
//
// The two lists are spelled out like this:
//
//	TOKENKEEPER_APPS="wx1:classic,wx2:stable"      # id[:mode], mode defaults to classic
//	TOKENKEEPER_APPS_WX1_SECRET=...                # exactly one of
//	TOKENKEEPER_APPS_WX1_SECRET_ENV=WX1_SECRET     #   (name of another variable)
//	TOKENKEEPER_APPS_WX1_SECRET_FILE=/run/secrets/wx1
//	TOKENKEEPER_APPS_WX1_MODE=stable               # optional, overrides the list's mode
//	TOKENKEEPER_APPS_WX1_TICKETS="jsapi,wx_card"   # optional (file: tickets: [jsapi]): tickets kept warm and served
//
//	TOKENKEEPER_HTTP_API_KEYS="backend,ops"        # key names
//	TOKENKEEPER_HTTP_API_KEYS_BACKEND_KEY=...      # exactly one of _KEY, _KEY_ENV, _KEY_FILE
//	TOKENKEEPER_HTTP_API_KEYS_BACKEND_APPS="wx1,wx2"   # or "*"
//	TOKENKEEPER_HTTP_API_KEYS_BACKEND_PAGE_HOSTS="m.example.com"   # optional: jssdk-config only for these page hosts
//
//	TOKENKEEPER_GATEWAY_CREDENTIALS="team-a"       # gateway credentials: the same scheme as API keys
//	TOKENKEEPER_GATEWAY_CREDENTIALS_TEAM_A_KEY=... # (_KEY, _KEY_ENV or _KEY_FILE, and _APPS)
//
// The <ID> and <NAME> parts are the appid or key name in upper case with
// every character other than A-Z and 0-9 replaced by "_" (wx1 → WX1).
// TOKENKEEPER_APPS, when set, replaces the file's list of apps; an app it
// names keeps the secret its file entry gives unless a per-app variable
// sets one. Per-app variables also apply to apps listed only in the file:
// setting any of an app's _SECRET/_SECRET_ENV/_SECRET_FILE replaces the
// file's secret source for that app. API keys work the same way.
// Variables that start with TOKENKEEPER_ but that the loader did not read
// (a typo, an app that is not listed) are reported in Config.UnusedEnv.
//
// # Secrets
//
// AppSecrets, the Redis password and API keys are wechat.Secret values:
// they print as "[redacted]" in every format. Print writes the effective
// configuration with all of them redacted and says where each came from.
//
// A secret or key file holds the secret alone: exactly one trailing
// newline ("\n" or "\r\n") is removed, and any other whitespace (a
// trailing space, a second line) is refused with the file's path, since a
// key with a trailing space would never match what clients send. A file
// readable by everyone is accepted with a warning (Config.Warnings).
// Values that may be a pasted secret (an appid, an API key's name, a
// rejected value, a path without '/') are shown only by their first
// characters and length.
//
// # Appids and names
//
// Apps fetched from WeChat itself (wechat.base_url on api.weixin.qq.com)
// must have WeChat's appid shape, "wx" and 16 hexadecimal digits
// (wechat.AppIDProblem); any upstream refuses an appid shaped like an
// AppSecret (32 hexadecimal digits). API key names are short lower-case
// words.
//
// # Safe by default
//
// Without API keys, an http.addr beyond loopback is refused unless
// http.allow_unauthenticated is true. metrics.addr moves /metrics (and a
// copy of /healthz and /readyz) to a listener of its own. http.tls.cert_file
// and key_file serve the API over HTTPS; the pair is checked here and
// re-read on every reload. A key with admin: true (env
// TOKENKEEPER_HTTP_API_KEYS_<NAME>_ADMIN=true) may call POST /admin/reload.
//
// # Reload and read-only commands
//
// The refresher reloads (SIGHUP, POST /admin/reload) by calling Load again
// with the same Options. Options.ReadOnly loads for the commands that only
// read Redis (status, token, invalidate): secrets need not resolve, apps
// may be none, and the HTTP sections are not checked.
package config

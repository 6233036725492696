package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Tokens is what the gateway serves tokens from; *tokencache.Cache is one.
type Tokens interface {
	Token(ctx context.Context, appID string) (tokencache.Token, error)
	// Invalidate is the verified passive refresh: bad was refused by WeChat
	// (or reported bad by a caller); it returns the token to use instead.
	Invalidate(ctx context.Context, appID, bad string) (tokencache.Token, error)
}

// Tickets serves jsapi and wx_card tickets; kind is "jsapi" or "wx_card".
// The returned Token's Value is the ticket and UsableUntil its usable end.
type Tickets interface {
	Ticket(ctx context.Context, appID, kind string) (tokencache.Token, error)
}

// App is one app the gateway serves. Secret is needed only for the /sns
// calls (substituted for the caller's credential) and, with
// AcceptAppSecret, to accept the real AppSecret from callers.
type App struct {
	ID     string
	Secret wechat.Secret
}

// Credential lets the bearer of Key act for Apps ("*" = every app): fetch
// their tokens, call /sns with it as the secret, or use it as a Bearer key.
type Credential struct {
	// Name identifies the credential in logs and metrics; the key never
	// appears there.
	Name string
	Key  wechat.Secret
	Apps []string
}

// DefaultPrefixes are the API path prefixes relayed as business calls.
var DefaultPrefixes = []string{
	"/cgi-bin/", "/wxa/", "/wxaapi/", "/datacube/", "/card/", "/merchant/", "/customservice/", "/pay/",
	"/shakearound/", "/semantic/", "/union/", "/product/", "/channels/", "/tcb/", "/wxopen/",
}

// Defaults of the limits.
const (
	DefaultMaxBody        = 64 << 20
	DefaultRetryBuffer    = 10 << 20
	DefaultTimeout        = 30 * time.Second
	DefaultMaxConcurrent  = 256
	DefaultMaxKnownTokens = 10000
	DefaultHonourGrace    = time.Minute
)

// Config configures a Gateway. Tokens, Apps, Credentials and UpstreamURL
// are required; zero limits take the defaults above.
type Config struct {
	Tokens Tokens
	// Tickets serves getticket; nil relays getticket upstream like any
	// business call.
	Tickets     Tickets
	Apps        []App
	Credentials []Credential
	// AcceptAppSecret lets callers use the real AppSecret as well as a
	// gateway credential (off by default: the secret should live only in
	// the refresher).
	AcceptAppSecret bool
	// UpstreamURL is WeChat's base URL (wechat.DefaultBaseURL); the only
	// place requests are forwarded to.
	UpstreamURL string
	// Transport sends upstream requests; nil means a dedicated clone of
	// http.DefaultTransport. Redirects are never followed: RoundTrip is
	// called directly.
	Transport http.RoundTripper
	// Ledger shares the tokens handed out with the other replicas; nil
	// keeps them in this process only (see the package doc).
	Ledger Ledger
	// MaxBody bounds a request body (default 64 MiB); over it: 45001.
	MaxBody int64
	// RetryBuffer is the largest request body held for a retry (default
	// 10 MiB); a larger one is streamed and not retried.
	RetryBuffer int64
	// Timeout bounds one request, retry and reply included (default 30s).
	Timeout time.Duration
	// MaxConcurrent bounds requests in flight (default 256); over it: -1.
	MaxConcurrent int
	// MaxKnownTokens bounds the map of tokens handed out (default 10000).
	MaxKnownTokens int
	// HonourGrace is how long past its usable end (as told to the caller)
	// a token handed out is still honoured (default 1m).
	HonourGrace time.Duration
	// Prefixes are the API path prefixes relayed (default DefaultPrefixes).
	Prefixes []string
	// Metrics records every request; nil records nothing.
	Metrics *Metrics
	// Logger receives failures; nil discards.
	Logger *slog.Logger
	// AccessLog logs one INFO line per request (tokens as fingerprints,
	// credentials by name).
	AccessLog bool
	// Clock is the time source (default time.Now).
	Clock func() time.Time
}

// Gateway is the http.Handler of the WeChat-compatible API. Build it with
// New; it is safe for concurrent use.
type Gateway struct {
	tokens        Tokens
	tickets       Tickets
	apps          map[string]*appEntry
	creds         atomic.Pointer[[]credential] // replaced whole by SetCredentials
	acceptSecret  bool
	upstream      *url.URL
	transport     http.RoundTripper
	known         *known
	maxBody       int64
	retryBuffer   int64
	timeout       time.Duration
	slots         chan struct{}
	maxConcurrent int
	prefixes      []string
	metrics       *Metrics
	log           *slog.Logger
	accessLog     bool
	now           func() time.Time
}

type appEntry struct {
	id         string
	secret     wechat.Secret
	secretHash [sha256.Size]byte
	// secretCred is the credential of callers using the AppSecret (nil
	// without one); in force only while Config.AcceptAppSecret is set.
	secretCred *credential
}

type credential struct {
	name string
	hash [sha256.Size]byte
	key  []byte // signs the tokens handed out to it (handle)
	all  bool
	apps map[string]bool
}

// allows reports whether c may act for app.
func (c *credential) allows(app string) bool { return c.all || c.apps[app] }

// buildCredentials checks list against the apps, as New and SetCredentials
// do (with none, the AppSecret must be accepted, or nobody could
// authenticate); its errors name the credential, never its key.
func buildCredentials(list []Credential, apps map[string]*appEntry, acceptSecret bool) ([]credential, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(list) == 0 && !acceptSecret {
		bad("Credentials: none configured, and AcceptAppSecret is off: no caller could authenticate")
	}
	var out []credential
	names := map[string]bool{}
	hashes := map[[sha256.Size]byte]bool{}
	for i, c := range list {
		where := fmt.Sprintf("Credentials[%d] (%q)", i, c.Name)
		switch {
		case c.Name == "":
			bad("Credentials[%d]: empty name", i)
		case names[c.Name]:
			bad("%s: name used twice", where)
		case c.Name == appSecretName:
			bad("%s: the name is reserved for callers using the AppSecret", where)
		}
		names[c.Name] = true
		if c.Key == "" {
			bad("%s: empty key", where)
		}
		cr := credential{name: c.Name, hash: sha256.Sum256([]byte(c.Key.Reveal())), key: []byte(c.Key.Reveal()), apps: map[string]bool{}}
		if hashes[cr.hash] {
			bad("%s: same key as an earlier credential", where)
		}
		hashes[cr.hash] = true
		for _, e := range apps {
			if e.secret != "" && e.secretHash == cr.hash {
				bad("%s: the key is app %q's AppSecret: give a credential of its own", where, e.id)
			}
		}
		if len(c.Apps) == 0 {
			bad("%s: lists no apps (use \"*\" for all)", where)
		}
		for _, app := range c.Apps {
			switch {
			case app == "*":
				cr.all = true
			case apps[app] == nil:
				bad("%s: app %q is not configured", where, app)
			default:
				cr.apps[app] = true
			}
		}
		out = append(out, cr)
	}
	return out, errs
}

// SetCredentials replaces the gateway credentials (a reload): a credential
// no longer listed, or no longer allowed an app, is refused from the next
// request on, and so are the tokens handed out to it. list is checked as
// New checks it; on error nothing changes.
func (g *Gateway) SetCredentials(list []Credential) error {
	creds, errs := buildCredentials(list, g.apps, g.acceptSecret)
	if len(errs) > 0 {
		return fmt.Errorf("gateway: invalid credentials: %w", errors.Join(errs...))
	}
	g.creds.Store(&creds)
	return nil
}

// credentials are the credentials in force.
func (g *Gateway) credentials() []credential { return *g.creds.Load() }

// New validates cfg and builds the Gateway. Its errors name the field and
// never hold a secret.
func New(cfg Config) (*Gateway, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.Tokens == nil {
		bad("Tokens: must not be nil")
	}
	g := &Gateway{
		tokens: cfg.Tokens, tickets: cfg.Tickets, apps: map[string]*appEntry{}, acceptSecret: cfg.AcceptAppSecret,
		transport: cfg.Transport, maxBody: cfg.MaxBody, retryBuffer: cfg.RetryBuffer, timeout: cfg.Timeout,
		maxConcurrent: cfg.MaxConcurrent, prefixes: cfg.Prefixes, metrics: cfg.Metrics, log: cfg.Logger,
		accessLog: cfg.AccessLog, now: cfg.Clock,
	}
	u, err := url.Parse(cfg.UpstreamURL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		bad("UpstreamURL: not an http(s) URL") // not quoted: it may hold a password
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		bad("UpstreamURL: must not carry user info, a query or a fragment")
	default:
		u.Path = strings.TrimRight(u.Path, "/")
		u.RawPath = ""
		g.upstream = u
	}
	if len(cfg.Apps) == 0 {
		bad("Apps: none configured")
	}
	for i, a := range cfg.Apps {
		if reason := tokencache.AppIDProblem(a.ID); reason != "" {
			bad("Apps[%d]: appid %s", i, reason)
			continue
		}
		if _, dup := g.apps[a.ID]; dup {
			bad("Apps[%d]: duplicate appid %q", i, a.ID)
		}
		e := &appEntry{id: a.ID, secret: a.Secret}
		if a.Secret != "" {
			e.secretHash = sha256.Sum256([]byte(a.Secret.Reveal()))
			e.secretCred = &credential{name: appSecretName, key: []byte(a.Secret.Reveal()), apps: map[string]bool{a.ID: true}}
		}
		g.apps[a.ID] = e
	}
	creds, cerrs := buildCredentials(cfg.Credentials, g.apps, cfg.AcceptAppSecret)
	errs = append(errs, cerrs...)
	g.creds.Store(&creds)
	for _, f := range []struct {
		name string
		v    int64
	}{{"MaxBody", cfg.MaxBody}, {"RetryBuffer", cfg.RetryBuffer}, {"Timeout", int64(cfg.Timeout)},
		{"MaxConcurrent", int64(cfg.MaxConcurrent)}, {"MaxKnownTokens", int64(cfg.MaxKnownTokens)}, {"HonourGrace", int64(cfg.HonourGrace)}} {
		if f.v < 0 {
			bad("%s: must not be negative", f.name)
		}
	}
	setDefault(&g.maxBody, DefaultMaxBody)
	setDefault(&g.retryBuffer, DefaultRetryBuffer)
	setDefault(&g.timeout, DefaultTimeout)
	setDefault(&g.maxConcurrent, DefaultMaxConcurrent)
	if g.retryBuffer > g.maxBody {
		bad("RetryBuffer %d: must not exceed MaxBody %d", g.retryBuffer, g.maxBody)
	}
	for i, p := range g.prefixes {
		if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || path.Clean(p)+"/" != p || p == "/" {
			bad("Prefixes[%d] %q: must be a clean path like /cgi-bin/", i, p)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("gateway: invalid config: %w", errors.Join(errs...))
	}
	if g.prefixes == nil {
		g.prefixes = DefaultPrefixes
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = g.maxConcurrent
		// Replies come back as sent, so the errcode can be read without
		// a gzip reader (the caller's Accept-Encoding is not forwarded).
		t.DisableCompression = true
		g.transport = t
	}
	maxKnown, grace := cfg.MaxKnownTokens, cfg.HonourGrace
	setDefault(&maxKnown, DefaultMaxKnownTokens)
	setDefault(&grace, DefaultHonourGrace)
	g.known = newKnown(maxKnown, grace, cfg.Ledger, g.log)
	g.slots = make(chan struct{}, g.maxConcurrent)
	return g, nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Request classes: the "class" label of the metrics.
const (
	ClassToken       = "token"
	ClassStableToken = "stable_token"
	ClassTicket      = "ticket"
	ClassBusiness    = "business"
	ClassSNS         = "sns"
	ClassOther       = "other"
)

// Retry outcomes: the "retry" label of the metrics.
const (
	RetryNone         = "none"          // WeChat did not refuse the token sent
	RetryDone         = "retried"       // refused; reported and sent again with the replacement
	RetryStreamed     = "not_retryable" // refused; the body was streamed, so not sent again
	RetryNoReplace    = "no_replacement"
	RetryReportFailed = "report_failed" // refused; Invalidate failed
)

// Paths served by the gateway itself.
const (
	pathToken          = wechat.EndpointToken
	pathStableToken    = wechat.EndpointStableToken
	pathTicket         = "/cgi-bin/ticket/getticket"
	pathOAuthToken     = "/sns/oauth2/access_token"
	pathJSCode2Session = "/sns/jscode2session"
	appsPrefix         = "/apps/"
)

// exchange is what one request did, for the metrics and the access log.
type exchange struct {
	class   string
	app     string
	cred    string // credential name
	token   string // the token the caller sent or got: logged only as its wechat.Fingerprint
	errcode int
	coded   bool   // errcode is known (answered here, or read from the reply)
	retry   string // RetryNone...
	local   string // why the gateway answered itself ("" = upstream's reply)
	status  int
	err     error // a failure behind a local answer, for the log (no secrets)
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ex := &exchange{class: ClassOther, retry: RetryNone}
	sw := &statusWriter{ResponseWriter: w}
	defer func() { g.finish(r, ex, sw, start) }()

	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		g.metrics.reject()
		g.fail(sw, ex, -1, "busy", fmt.Sprintf("system busy: the gateway has %d requests in flight (gateway.max_concurrent)", g.maxConcurrent))
		return
	}
	g.metrics.inFlightAdd(1)
	defer g.metrics.inFlightAdd(-1)
	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	defer cancel()
	r = r.WithContext(ctx)

	p := r.URL.Path
	if p == "" || p[0] != '/' || path.Clean(p) != p && path.Clean(p)+"/" != p {
		g.fail(sw, ex, 40066, "bad_path", "invalid url: the path is not clean")
		return
	}
	switch {
	case p == pathToken:
		ex.class = ClassToken
		g.serveToken(sw, r, ex)
	case p == pathStableToken:
		ex.class = ClassStableToken
		g.serveStableToken(sw, r, ex)
	case p == pathTicket && g.tickets != nil:
		ex.class = ClassTicket
		g.serveTicket(sw, r, ex)
	case p == pathOAuthToken || p == pathJSCode2Session:
		ex.class = ClassSNS
		g.serveSNS(sw, r, ex)
	case strings.TrimSuffix(p, "/") == pathToken || strings.TrimSuffix(p, "/") == pathStableToken:
		// A variant of a token path is never relayed: tokens are minted
		// by the cache only.
		g.fail(sw, ex, 40066, "unknown_path", "invalid url")
	case strings.HasPrefix(p, appsPrefix):
		ex.class = ClassBusiness
		g.serveBearer(sw, r, ex)
	case g.isAPIPath(p):
		ex.class = ClassBusiness
		g.serveBusiness(sw, r, ex)
	default:
		g.fail(sw, ex, 40066, "unknown_path", "invalid url: the gateway relays only WeChat API paths")
	}
}

func (g *Gateway) isAPIPath(p string) bool {
	for _, pre := range g.prefixes {
		if strings.HasPrefix(p, pre) && len(p) > len(pre) {
			return true
		}
	}
	return false
}

// finish records the exchange in the metrics and the access log.
func (g *Gateway) finish(r *http.Request, ex *exchange, sw *statusWriter, start time.Time) {
	took := time.Since(start)
	ex.status = sw.code()
	g.metrics.observe(ex, took)
	if ex.err != nil || g.accessLog {
		attrs := []any{"method", r.Method, "class", ex.class, "path", truncate(r.URL.Path, 128), "status", ex.status, "took", took}
		if ex.app != "" {
			attrs = append(attrs, "app", ex.app)
		}
		if ex.cred != "" {
			attrs = append(attrs, "credential", ex.cred)
		}
		if ex.token != "" {
			attrs = append(attrs, "token", wechat.Fingerprint(ex.token))
		}
		if ex.coded {
			attrs = append(attrs, "errcode", ex.errcode)
		}
		if ex.retry != RetryNone {
			attrs = append(attrs, "retry", ex.retry)
		}
		if ex.local != "" {
			attrs = append(attrs, "answered_by", "gateway", "reason", ex.local)
		}
		if ex.err != nil {
			g.log.Warn("gateway: request failed", append(attrs, "err", ex.err)...)
		} else {
			g.log.Info("gateway: request", attrs...)
		}
	}
}

// HeaderGateway names why the gateway answered a request itself.
const HeaderGateway = "X-Tokenkeeper-Gateway"

// HeaderRetry says a request was retried with a new token, or why it could
// not be.
const HeaderRetry = "X-Tokenkeeper-Retry"

// fail answers in WeChat's error shape: HTTP 200, {"errcode","errmsg"}.
func (g *Gateway) fail(w http.ResponseWriter, ex *exchange, code int, reason, msg string) {
	ex.errcode, ex.coded, ex.local = code, true, reason
	w.Header().Set(HeaderGateway, reason)
	writeJSON(w, `{"errcode":`+strconv.Itoa(code)+`,"errmsg":`+strconv.Quote("tokenkeeper gateway: "+msg)+`}`)
}

func writeJSON(w http.ResponseWriter, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(body))
}

// tokenFailure answers when the cache could not give a token: the daily
// quota keeps WeChat's code, everything else is "system busy" (the SDK
// retries later; the operator reads the errmsg and the refresher's logs).
func (g *Gateway) tokenFailure(w http.ResponseWriter, ex *exchange, err error) {
	ex.err = err
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		g.fail(w, ex, -1, "timeout", fmt.Sprintf("system busy: no token within %v (gateway.timeout)", g.timeout))
	case errors.Is(err, wechat.ErrQuota) || errors.Is(err, tokencache.ErrBudgetExceeded):
		g.fail(w, ex, 45009, "quota", "reach max api daily quota limit: the app's fetch budget is used up")
	default:
		g.fail(w, ex, -1, "no_token", "system busy: no token for the app ("+wechat.ClassName(err)+"; see the refresher's logs)")
	}
}

// statusWriter remembers the status code for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the connection (Flush).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

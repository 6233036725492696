package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Tokens is what the API serves from; *tokencache.Cache is one.
type Tokens interface {
	Token(ctx context.Context, appID string) (tokencache.Token, error)
	Invalidate(ctx context.Context, appID, bad string) (tokencache.Token, error)
}

// APIKey lets the bearer of Key read the tokens of Apps.
type APIKey struct {
	// Name identifies the key in logs; the key itself is never logged.
	Name string
	Key  wechat.Secret
	// Apps the key may read; "*" means every configured app.
	Apps []string
	// PageHosts, if set, are the only page hosts this key may have
	// JS-SDK configs signed for (exact host names, any port).
	PageHosts []string
	// Admin lets the key call the admin routes (POST /admin/reload).
	Admin bool
}

// Config configures the handler built by New.
type Config struct {
	Tokens Tokens
	// Apps are the configured appids; any other answers 404.
	Apps []string
	// APIKeys guard the /v1 routes; none means no authentication (demo
	// only: New logs a WARN).
	APIKeys []APIKey
	// Ready reports readiness (nil error = ready); nil means always ready.
	// It gets a context bounded by ReadyTimeout.
	Ready func(ctx context.Context) error
	// ReadyTimeout bounds one Ready call (default 2s).
	ReadyTimeout time.Duration
	// ReadyWarnings, if set, lists what an operator must fix although the
	// process is ready (a Redis that may evict the budget): each is a line
	// "warning: ..." of /readyz's body after "ok". It must not block.
	ReadyWarnings func() []string
	// Gatherer is served at /metrics; nil answers 404.
	Gatherer prometheus.Gatherer
	// Metrics records each request by route and status; nil records
	// nothing.
	Metrics *metrics.Metrics
	// Logger receives failures (WARN/ERROR), invalidations (INFO) and an
	// access line per request (DEBUG). Nil discards.
	Logger *slog.Logger
	// InvalidateRate limits the invalidations each API key may send
	// (default 1/s), with a burst of InvalidateBurst (default 5), over all
	// its apps, in this process. Per key, so a key that sends junk or
	// loops only throttles itself; what real mints cost is bounded
	// fleet-wide by the cache (tokencache.WithPassiveRefreshLimit). Without
	// API keys every caller shares one limit.
	InvalidateRate  rate.Limit
	InvalidateBurst int
	// PassiveRefreshWindow is the Retry-After sent when the cache refuses
	// a passive refresh over its fleet-wide rate
	// (tokencache.ErrPassiveRefreshLimited): the window of that rate
	// (default 1m, tokencache's default).
	PassiveRefreshWindow time.Duration
	// Clock is the time source for expires_in and the rate limiter
	// (default time.Now).
	Clock func() time.Time
	// Tickets, if set, serves the ticket routes (tickets.go); nil leaves
	// them out.
	Tickets Tickets
	// AppTickets are the ticket kinds each app serves ("jsapi",
	// "wx_card"); a kind not listed answers 404.
	AppTickets map[string][]string
	// Reload, if set, is POST /admin/reload: it re-reads the configuration
	// and applies it, or refuses it (the running one stays) with an error
	// that holds no secret. Only a key with Admin may call it; without API
	// keys the route answers 403.
	Reload func(ctx context.Context) error
}

// Route patterns, also the "route" label of the HTTP metrics.
const (
	RouteToken      = "/v1/apps/{appid}/token"
	RouteInvalidate = "/v1/apps/{appid}/invalidate"
	RouteHealthz    = "/healthz"
	RouteReadyz     = "/readyz"
	RouteMetrics    = "/metrics"
	RouteReload     = "/admin/reload"
	RouteOther      = "other" // anything unmatched
)

// MaxBodyBytes bounds an invalidate request body.
const MaxBodyBytes = 4 << 10

// maxTokenLen is the longest access_token accepted in a request, as in
// tokencache: WeChat says to reserve 512 characters.
const maxTokenLen = 2048

type api struct {
	tokens       Tokens
	auth         atomic.Pointer[authState] // swapped whole by Update
	reload       func(ctx context.Context) error
	ready        func(ctx context.Context) error
	readyTimeout time.Duration
	readyWarn    func() []string
	metricsH     http.Handler
	metrics      *metrics.Metrics
	log          *slog.Logger
	now          func() time.Time
	rate         rate.Limit
	burst        int
	passiveRetry time.Duration
	anonLimit    *rate.Limiter // invalidations when no API key is configured

	tickets    Tickets
	signer     *jssdk.Signer
	appTickets map[string]map[string]bool // app → kinds served
}

// authState is what Update replaces: the apps served and the keys that
// may read them.
type authState struct {
	apps map[string]bool
	keys []key
}

type key struct {
	name  string
	hash  [sha256.Size]byte
	all   bool
	admin bool
	apps  map[string]bool
	limit *rate.Limiter // this key's invalidations
	// pageHosts the key may sign JS-SDK configs for; nil: any.
	pageHosts map[string]bool
}

// Handler is the API's handler, whose apps and keys can be replaced while
// it serves (a configuration reload).
type Handler struct {
	http.Handler
	a *api
}

// Update replaces the apps served and the API keys, checked as New checks
// them; on error nothing changes. A key that stays (same name and key)
// keeps its invalidation budget. Requests under way finish with what they
// started with.
func (h *Handler) Update(apps []string, keys []APIKey) error {
	st, errs := h.a.buildAuth(apps, keys, h.a.auth.Load())
	if len(errs) > 0 {
		return fmt.Errorf("httpapi: invalid update: %w", errors.Join(errs...))
	}
	h.a.auth.Store(st)
	return nil
}

// buildAuth checks apps and keys and builds their state, reusing the
// limiters of old's keys that are unchanged.
func (a *api) buildAuth(apps []string, keys []APIKey, old *authState) (*authState, []error) {
	var errs []error
	st := &authState{apps: make(map[string]bool, len(apps))}
	for i, app := range apps {
		if app == "" {
			//lint:ignore ST1005 the message starts with the name of the Config field, like the others here
			errs = append(errs, fmt.Errorf("Apps[%d]: empty appid", i))
		}
		st.apps[app] = true
	}
	seenNames := map[string]bool{}
	seenHashes := map[[sha256.Size]byte]bool{}
	for i, k := range keys {
		where := fmt.Sprintf("APIKeys[%d] (%q)", i, k.Name)
		switch {
		case k.Name == "":
			errs = append(errs, fmt.Errorf("APIKeys[%d]: empty name", i))
		case seenNames[k.Name]:
			errs = append(errs, fmt.Errorf("%s: name used twice", where))
		}
		seenNames[k.Name] = true
		if len(k.Key.Reveal()) < 16 {
			errs = append(errs, fmt.Errorf("%s: key must be at least 16 characters", where))
		}
		if len(k.Apps) == 0 {
			errs = append(errs, fmt.Errorf("%s: lists no apps (use \"*\" for all)", where))
		}
		kk := key{name: k.Name, hash: sha256.Sum256([]byte(k.Key.Reveal())), admin: k.Admin, apps: map[string]bool{}}
		var herr error
		if kk.pageHosts, herr = keyPageHosts(k.PageHosts); herr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, herr))
		}
		if seenHashes[kk.hash] {
			errs = append(errs, fmt.Errorf("%s: same key as an earlier entry", where))
		}
		seenHashes[kk.hash] = true
		for _, app := range k.Apps {
			switch {
			case app == "*":
				kk.all = true
			case !st.apps[app]:
				errs = append(errs, fmt.Errorf("%s: app %q is not configured", where, app))
			default:
				kk.apps[app] = true
			}
		}
		if old != nil {
			for _, o := range old.keys {
				if o.name == kk.name && o.hash == kk.hash {
					kk.limit = o.limit
				}
			}
		}
		if kk.limit == nil && a.rate != 0 {
			kk.limit = rate.NewLimiter(a.rate, a.burst)
		}
		st.keys = append(st.keys, kk)
	}
	return st, errs
}

// New validates cfg and returns the API's handler.
func New(cfg Config) (http.Handler, error) {
	var errs []error
	if cfg.Tokens == nil {
		errs = append(errs, errors.New("Tokens: must not be nil"))
	}
	a := &api{
		tokens:       cfg.Tokens,
		reload:       cfg.Reload,
		ready:        cfg.Ready,
		readyTimeout: cfg.ReadyTimeout,
		readyWarn:    cfg.ReadyWarnings,
		metrics:      cfg.Metrics,
		log:          cfg.Logger,
		now:          cfg.Clock,
		rate:         cfg.InvalidateRate,
		burst:        cfg.InvalidateBurst,
		passiveRetry: cfg.PassiveRefreshWindow,
	}
	if cfg.ReadyTimeout < 0 {
		errs = append(errs, fmt.Errorf("ReadyTimeout %v: must not be negative", cfg.ReadyTimeout))
	}
	if cfg.InvalidateRate < 0 {
		errs = append(errs, fmt.Errorf("InvalidateRate %v: must not be negative", cfg.InvalidateRate))
	}
	if cfg.InvalidateBurst < 0 {
		errs = append(errs, fmt.Errorf("InvalidateBurst %d: must not be negative", cfg.InvalidateBurst))
	}
	if cfg.PassiveRefreshWindow < 0 {
		errs = append(errs, fmt.Errorf("PassiveRefreshWindow %v: must not be negative", cfg.PassiveRefreshWindow))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("httpapi: invalid config: %w", errors.Join(errs...))
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.readyTimeout == 0 {
		a.readyTimeout = 2 * time.Second
	}
	if a.rate == 0 {
		a.rate = 1
	}
	if a.burst == 0 {
		a.burst = 5
	}
	if a.passiveRetry == 0 {
		a.passiveRetry = time.Minute
	}
	st, authErrs := a.buildAuth(cfg.Apps, cfg.APIKeys, nil)
	if len(authErrs) > 0 {
		return nil, fmt.Errorf("httpapi: invalid config: %w", errors.Join(authErrs...))
	}
	a.auth.Store(st)
	a.anonLimit = rate.NewLimiter(a.rate, a.burst)
	if cfg.Gatherer != nil {
		a.metricsH = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogErrorLog{a.log}})
	}
	if len(st.keys) == 0 {
		a.log.Warn("httpapi: no API keys configured: anyone who can reach the API can read every token (demo only)")
	}

	mux := http.NewServeMux()
	// Methods are checked in the handlers, not in the patterns, so that a
	// wrong method gets a JSON 405 like every other error.
	mux.Handle(RouteToken, a.route(RouteToken, []string{http.MethodGet, http.MethodHead}, a.appRoute(a.serveToken)))
	mux.Handle(RouteInvalidate, a.route(RouteInvalidate, []string{http.MethodPost}, a.appRoute(a.serveInvalidate)))
	mux.Handle(RouteHealthz, a.route(RouteHealthz, []string{http.MethodGet, http.MethodHead}, a.serveHealthz))
	mux.Handle(RouteReadyz, a.route(RouteReadyz, []string{http.MethodGet, http.MethodHead}, a.serveReadyz))
	mux.Handle(RouteMetrics, a.route(RouteMetrics, []string{http.MethodGet, http.MethodHead}, a.serveMetrics))
	if err := a.ticketRoutes(mux, cfg); err != nil {
		return nil, fmt.Errorf("httpapi: invalid config: %w", err)
	}
	mux.Handle(RouteReload, a.route(RouteReload, []string{http.MethodPost}, a.adminRoute(a.serveReload)))
	return &Handler{Handler: a.withMux(mux), a: a}, nil
}

// withMux adds the JSON 404 for everything mux does not route.
func (a *api) withMux(mux *http.ServeMux) http.Handler {
	notFound := a.route(RouteOther, nil, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+truncate(r.URL.Path, 100))
	})
	mux.Handle("/", notFound)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux answers a path like /v1/apps//token or /a/../b with an
		// HTML redirect; an API client gets a JSON 404 instead.
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
			notFound.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// OpsConfig configures the operations handler NewOps builds.
type OpsConfig struct {
	// Ready, ReadyTimeout, ReadyWarnings, Gatherer, Metrics and Logger
	// are as in Config.
	Ready         func(ctx context.Context) error
	ReadyTimeout  time.Duration
	ReadyWarnings func() []string
	Gatherer      prometheus.Gatherer
	Metrics       *metrics.Metrics
	Logger        *slog.Logger
}

// NewOps is the handler of the operations listener (metrics.addr): only
// /metrics, /healthz and /readyz, unauthenticated like on the API's
// listener, and no token route at all.
func NewOps(cfg OpsConfig) (http.Handler, error) {
	if cfg.ReadyTimeout < 0 {
		return nil, fmt.Errorf("httpapi: invalid ops config: ReadyTimeout %v: must not be negative", cfg.ReadyTimeout)
	}
	a := &api{ready: cfg.Ready, readyTimeout: cfg.ReadyTimeout, readyWarn: cfg.ReadyWarnings, metrics: cfg.Metrics, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.readyTimeout == 0 {
		a.readyTimeout = 2 * time.Second
	}
	if cfg.Gatherer != nil {
		a.metricsH = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogErrorLog{a.log}})
	}
	mux := http.NewServeMux()
	mux.Handle(RouteHealthz, a.route(RouteHealthz, []string{http.MethodGet, http.MethodHead}, a.serveHealthz))
	mux.Handle(RouteReadyz, a.route(RouteReadyz, []string{http.MethodGet, http.MethodHead}, a.serveReadyz))
	mux.Handle(RouteMetrics, a.route(RouteMetrics, []string{http.MethodGet, http.MethodHead}, a.serveMetrics))
	return a.withMux(mux), nil
}

// adminRoute lets through only a request bearing a key with admin rights.
// Without API keys there is no one to trust: admin routes answer 403 (a
// reload is still a SIGHUP away).
func (a *api) adminRoute(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st := a.auth.Load()
		if len(st.keys) == 0 {
			writeError(w, http.StatusForbidden, "admin routes need an API key with admin: true; none is configured (send SIGHUP to reload)")
			return
		}
		k, problem := st.authenticate(r)
		if k == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tokenkeeper"`)
			writeError(w, http.StatusUnauthorized, problem)
			return
		}
		reqOf(r).key = k.name
		if !k.admin {
			writeError(w, http.StatusForbidden, fmt.Sprintf("API key %q may not call admin routes (admin: true)", k.name))
			return
		}
		h(w, r)
	}
}

type reloadResponse struct {
	Reloaded bool `json:"reloaded"`
}

func (a *api) serveReload(w http.ResponseWriter, r *http.Request) {
	if a.reload == nil {
		writeError(w, http.StatusNotFound, "reload is not enabled")
		return
	}
	if err := a.reload(r.Context()); err != nil {
		// The configuration's errors name fields and files, never secrets.
		writeError(w, http.StatusUnprocessableEntity, "reload refused; the running configuration stays: "+err.Error())
		return
	}
	a.log.Info("httpapi: configuration reloaded", "api_key", reqOf(r).key)
	writeJSON(w, http.StatusOK, reloadResponse{Reloaded: true})
}

// request carries what the middleware learned for the access log.
type request struct {
	route string
	app   string
	key   string // name of the API key used
	limit *rate.Limiter
	err   error // the failure behind a 5xx, for the log
}

type ctxKey struct{}

func reqOf(r *http.Request) *request { return r.Context().Value(ctxKey{}).(*request) }

// route wraps a handler with the method check, the access log and the
// metrics. allow nil accepts every method.
func (a *api) route(name string, allow []string, h http.HandlerFunc) http.Handler {
	allowHeader := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rq := &request{route: name}
		sw := &statusWriter{ResponseWriter: w}
		if allow != nil && !slices.Contains(allow, r.Method) {
			w.Header().Set("Allow", allowHeader)
			writeError(sw, http.StatusMethodNotAllowed, "method "+truncate(r.Method, 20)+" not allowed; use "+allowHeader)
		} else {
			h(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rq)))
		}
		status := sw.code()
		took := time.Since(start)
		a.metrics.ObserveHTTP(name, status, took)
		attrs := []any{"method", r.Method, "route", name, "status", status, "took", took}
		if rq.app != "" {
			attrs = append(attrs, "app", rq.app)
		}
		if rq.key != "" {
			attrs = append(attrs, "api_key", rq.key)
		}
		switch {
		case status >= 500:
			a.log.Warn("httpapi: request failed", append(attrs, "err", rq.err)...)
		case a.log.Enabled(r.Context(), slog.LevelDebug):
			a.log.Debug("httpapi: request", attrs...)
		}
	})
}

// appRoute authenticates, authorizes and checks the appid before h.
func (a *api) appRoute(h func(w http.ResponseWriter, r *http.Request, app string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rq := reqOf(r)
		app := r.PathValue("appid")
		st := a.auth.Load()
		if len(st.keys) > 0 {
			k, problem := st.authenticate(r)
			if k == nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tokenkeeper"`)
				writeError(w, http.StatusUnauthorized, problem)
				return
			}
			rq.key, rq.limit = k.name, k.limit
			if !k.all && !k.apps[app] {
				writeError(w, http.StatusForbidden, fmt.Sprintf("API key %q may not read app %q", k.name, truncate(app, 64)))
				return
			}
		}
		if !st.apps[app] {
			writeError(w, http.StatusNotFound, fmt.Sprintf("unknown app %q", truncate(app, 64)))
			return
		}
		rq.app = app
		if rq.limit == nil {
			rq.limit = a.anonLimit
		}
		h(w, r, app)
	}
}

// authenticate finds the key the request bears. It compares against every
// key, whatever matched, so timing says nothing about which one did.
func (st *authState) authenticate(r *http.Request) (*key, string) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" {
		return nil, "missing Authorization header (want \"Bearer <key>\")"
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, "malformed Authorization header (want \"Bearer <key>\")"
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found *key
	for i := range st.keys {
		if subtle.ConstantTimeCompare(sum[:], st.keys[i].hash[:]) == 1 {
			found = &st.keys[i]
		}
	}
	if found == nil {
		return nil, "invalid API key"
	}
	return found, ""
}

// tokenResponse is the answer to both /v1 routes.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Version     int64  `json:"version"`
}

func (a *api) serveToken(w http.ResponseWriter, r *http.Request, app string) {
	tok, err := a.tokens.Token(r.Context(), app)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeToken(w, tok)
}

func (a *api) serveInvalidate(w http.ResponseWriter, r *http.Request, app string) {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want application/json", truncate(ct, 64)))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body failed")
		return
	}
	bad, err := parseInvalidateBody(body)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errBodyTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, err.Error())
		return
	}
	if rq := reqOf(r); !rq.limit.AllowN(a.now(), 1) {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(1/float64(a.rate)))))
		from := ""
		if rq.key != "" {
			from = fmt.Sprintf(" from API key %q", rq.key)
		}
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many invalidations%s; at most %v per second", from, float64(a.rate)))
		return
	}
	a.log.Info("httpapi: token reported invalid", "app", app, "token", wechat.Fingerprint(bad), "api_key", reqOf(r).key)
	tok, err := a.tokens.Invalidate(r.Context(), app, bad)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeToken(w, tok)
}

func (a *api) writeToken(w http.ResponseWriter, tok tokencache.Token) {
	now := a.now()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: tok.Value,
		ExpiresIn:   int64(tok.ExpiresIn(now) / time.Second),
		ExpiresAt:   tok.UsableUntil.UTC().Format(time.RFC3339),
		Version:     tok.Version,
	})
}

// fail maps a Tokens error to a status.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg, retryAfter := classify(err, a.now(), a.passiveRetry)
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retryAfter.Seconds())), 10))
	}
	reqOf(r).err = err
	writeError(w, status, msg)
}

// classify maps an error from Tokens to a status, a message for the client
// and, where known, when trying again makes sense. What WeChat said is
// wechat.ClassName's; everything else is the cache's own errors.
func classify(err error, now time.Time, passiveRetry time.Duration) (status int, msg string, retryAfter time.Duration) {
	var held *tokencache.HeldError
	if errors.As(err, &held) {
		retryAfter = held.Until.Sub(now)
	}
	upstream := wechat.ClassName(err) // "error": not an upstream answer
	switch {
	case upstream == "quota":
		if retryAfter <= 0 {
			retryAfter = wechat.NextQuotaReset(now).Sub(now)
		}
		return http.StatusTooManyRequests, "WeChat daily token quota exhausted for this app; serving resumes when a token can be fetched: " + err.Error(), retryAfter
	case errors.Is(err, tokencache.ErrBudgetExceeded):
		if retryAfter <= 0 {
			retryAfter = wechat.NextQuotaReset(now).Sub(now)
		}
		return http.StatusTooManyRequests, "daily fetch budget exhausted for this app: " + err.Error(), retryAfter
	case errors.Is(err, tokencache.ErrPassiveRefreshLimited):
		return http.StatusTooManyRequests, "too many passive refreshes for this app, fleet-wide; try again later: " + err.Error(), passiveRetry
	case errors.Is(err, tokencache.ErrUnavailable), errors.Is(err, tokencache.ErrClosed):
		return http.StatusServiceUnavailable, "token store unavailable: " + err.Error(), 0
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timed out waiting for a token", 0
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "request cancelled", 0
	case upstream != "error", held != nil:
		// config, transient, token_invalid: WeChat's answer (or its
		// absence) is the cause.
		return http.StatusBadGateway, "upstream WeChat failed: " + err.Error(), retryAfter
	case errors.Is(err, tokencache.ErrInvalidAppID):
		return http.StatusBadRequest, err.Error(), 0
	}
	return http.StatusInternalServerError, "internal error: " + err.Error(), 0
}

func (a *api) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "ok\n")
}

func (a *api) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if a.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), a.readyTimeout)
		err := a.ready(ctx)
		cancel()
		if err != nil {
			reqOf(r).err = err
			writeError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "ok\n")
	if a.readyWarn != nil {
		for _, warning := range a.readyWarn() {
			io.WriteString(w, "warning: "+warning+"\n")
		}
	}
}

func (a *api) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if a.metricsH == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	a.metricsH.ServeHTTP(w, r)
}

var (
	errBodyTooLarge = fmt.Errorf("request body larger than %d bytes", MaxBodyBytes)
	errEmptyToken   = errors.New(`"access_token" is missing or empty`)
)

// parseInvalidateBody decodes {"access_token":"..."}: exactly one JSON
// object, no other field, a token of 1 to 2048 printable ASCII characters.
// Its errors never quote the token.
func parseInvalidateBody(body []byte) (string, error) {
	if len(body) > MaxBodyBytes {
		return "", errBodyTooLarge
	}
	var req struct {
		AccessToken *string `json:"access_token"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return "", fmt.Errorf("invalid JSON body: %s", describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("invalid JSON body: data after the object")
	}
	if req.AccessToken == nil || *req.AccessToken == "" {
		return "", errEmptyToken
	}
	tok := *req.AccessToken
	if len(tok) > maxTokenLen {
		return "", fmt.Errorf(`"access_token" longer than %d bytes`, maxTokenLen)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c > '~' {
			return "", errors.New(`"access_token" contains a character outside printable ASCII`)
		}
	}
	return tok, nil
}

// describeJSONError keeps the decoder's precision (offset, field) without
// echoing values from the body, which may hold a token.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return "syntax error at byte " + strconv.FormatInt(syn.Offset, 10)
	case errors.As(err, &typ) && typ.Field == "":
		return "the body must be a JSON object"
	case errors.As(err, &typ):
		// Only one field is known, so the type error is about it; its
		// offending value is not echoed.
		return `"access_token" must be a string`
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "body ends in the middle of the object"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field (only \"access_token\" is allowed)"
	}
	return "not a JSON object with an \"access_token\" string"
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

type errorResponse struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

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

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// slogErrorLog adapts the logger for promhttp's error reporting.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) {
	l.log.Error("httpapi: serving metrics", "err", fmt.Sprint(v...))
}

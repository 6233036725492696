package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// SecretEnv carries the apps' secret to the children (never argv, which
// any user can read with ps).
const SecretEnv = "CHAOS_APP_SECRET"

// ReaderConfig configures one reader process.
type ReaderConfig struct {
	ID          int
	RedisAddr   string
	UpstreamURL string
	Apps        int
	Goroutines  int
	Interval    time.Duration
	MaxDuration time.Duration // hard stop, in case the parent is gone
	ReportEvery time.Duration
	KeyPrefix   string
	Grace       time.Duration
	Cache       CacheTimings
	// Gateways are the replicas' gateway base URLs the SDK goroutines use
	// (sdk.go); GatewayGoroutines of them run when Gateways is not empty.
	Gateways          []string
	GatewayGoroutines int
}

func (rc ReaderConfig) args() []string {
	return []string{"reader",
		"--id", fmt.Sprint(rc.ID), "--redis", rc.RedisAddr, "--upstream", rc.UpstreamURL,
		"--apps", fmt.Sprint(rc.Apps), "--goroutines", fmt.Sprint(rc.Goroutines),
		"--interval", rc.Interval.String(), "--max-duration", rc.MaxDuration.String(),
		"--report-every", rc.ReportEvery.String(), "--key-prefix", rc.KeyPrefix,
		"--overlap", rc.Grace.String(), "--margin", rc.Cache.Margin.String(),
		"--near-max-age", rc.Cache.NearMaxAge.String(), "--refresh-ahead", rc.Cache.RefreshAhead.String(),
		"--lock-ttl", rc.Cache.LockTTL.String(), "--fetch-timeout", rc.Cache.FetchTimeout.String(),
		"--gateways", strings.Join(rc.Gateways, ","), "--gateway-goroutines", fmt.Sprint(rc.GatewayGoroutines),
	}
}

// ParseReaderFlags parses the arguments of "chaos reader".
func ParseReaderFlags(args []string, errOut io.Writer) (ReaderConfig, error) {
	d := DefaultConfig()
	var rc ReaderConfig
	fs := flag.NewFlagSet("chaos reader", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.IntVar(&rc.ID, "id", 0, "reader number, for the report")
	fs.StringVar(&rc.RedisAddr, "redis", "", "Redis host:port (loopback)")
	fs.StringVar(&rc.UpstreamURL, "upstream", "", "fake WeChat base URL (loopback)")
	fs.IntVar(&rc.Apps, "apps", d.Apps, "number of apps (named like the parent's)")
	fs.IntVar(&rc.Goroutines, "goroutines", d.Goroutines, "concurrent business callers")
	fs.DurationVar(&rc.Interval, "interval", d.Interval, "pause between two calls of one goroutine")
	fs.DurationVar(&rc.MaxDuration, "max-duration", 10*time.Minute, "exit after this long whatever happens")
	fs.DurationVar(&rc.ReportEvery, "report-every", time.Second, "how often to print a JSON line of counts")
	fs.StringVar(&rc.KeyPrefix, "key-prefix", d.KeyPrefix, "tokencache key prefix")
	fs.DurationVar(&rc.Grace, "overlap", d.Grace, "tokencache overlap (the upstream's grace)")
	fs.DurationVar(&rc.Cache.Margin, "margin", d.Cache.Margin, "tokencache margin")
	fs.DurationVar(&rc.Cache.NearMaxAge, "near-max-age", d.Cache.NearMaxAge, "tokencache near max age")
	fs.DurationVar(&rc.Cache.RefreshAhead, "refresh-ahead", d.Cache.RefreshAhead, "tokencache refresh ahead")
	fs.DurationVar(&rc.Cache.LockTTL, "lock-ttl", d.Cache.LockTTL, "tokencache lock TTL")
	fs.DurationVar(&rc.Cache.FetchTimeout, "fetch-timeout", d.Cache.FetchTimeout, "tokencache fetch timeout")
	gateways := fs.String("gateways", "", "comma-separated gateway base URLs (loopback) for the SDK goroutines; empty: none")
	fs.IntVar(&rc.GatewayGoroutines, "gateway-goroutines", 0, "SDK-style goroutines calling through the gateways")
	if err := fs.Parse(args); err != nil {
		return rc, err
	}
	if *gateways != "" {
		rc.Gateways = strings.Split(*gateways, ",")
	}
	switch {
	case fs.NArg() > 0:
		return rc, fmt.Errorf("chaos reader: unexpected arguments %q", fs.Args())
	case rc.RedisAddr == "" || rc.UpstreamURL == "":
		return rc, errors.New("chaos reader: --redis and --upstream are required")
	case rc.Apps < 1 || rc.Goroutines < 1 || rc.Interval <= 0 || rc.MaxDuration <= 0 || rc.ReportEvery <= 0:
		return rc, errors.New("chaos reader: --apps and --goroutines must be positive, and every duration too")
	case rc.GatewayGoroutines < 0 || (rc.GatewayGoroutines > 0) != (len(rc.Gateways) > 0):
		return rc, errors.New("chaos reader: --gateway-goroutines must be positive exactly when --gateways is set")
	}
	return rc, nil
}

// Gap is a stretch during which one reader goroutine had no token the
// upstream accepted.
type Gap struct {
	Start time.Time     `json:"start"`
	End   time.Time     `json:"end"`
	Took  time.Duration `json:"took_ns"`
	App   string        `json:"app"`
	Cause string        `json:"cause"`
}

// ReaderLine is what a reader prints, one JSON object per line: counts
// since it started, and the gaps and dead calls since its last line.
type ReaderLine struct {
	Reader        int              `json:"reader"`
	PID           int              `json:"pid"`
	At            time.Time        `json:"at"`
	Final         bool             `json:"final,omitempty"`
	Calls         BusinessCounts   `json:"calls"`
	Retries       int64            `json:"retries"`
	RetriedOK     int64            `json:"retried_ok"`
	Invalidations int64            `json:"invalidations"`
	Errors        map[string]int64 `json:"errors,omitempty"`
	ErrorSpans    map[string]Span  `json:"error_spans,omitempty"`
	MaxGap        time.Duration    `json:"max_gap_ns"`
	Gaps          []Gap            `json:"gaps,omitempty"`
	Dead          []DeadCall       `json:"dead,omitempty"`
	Cache         tokencache.Stats `json:"cache"`
	Signatures    SignatureCounts  `json:"signatures"` // signing.go
	Gateway       GatewayCounts    `json:"gateway"`    // sdk.go
}

// Span is when something was first and last seen.
type Span struct {
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

func (s Span) merge(o Span) Span {
	if s.First.IsZero() || (!o.First.IsZero() && o.First.Before(s.First)) {
		s.First = o.First
	}
	if o.Last.After(s.Last) {
		s.Last = o.Last
	}
	return s
}

// gapReportMin is the shortest gap a reader reports one by one.
const gapReportMin = 250 * time.Millisecond

// announcement is the last change message seen for an app.
type announcement struct {
	version string
	at      time.Time
}

func (s *readerState) watchAnnouncements(ch <-chan *redis.Message) {
	for msg := range ch {
		app, version, _ := strings.Cut(msg.Payload, " ")
		s.mu.Lock()
		s.announced[app] = announcement{version: version, at: time.Now()}
		s.mu.Unlock()
	}
}

type readerState struct {
	announced     map[string]announcement
	id            int
	log           *slog.Logger
	mu            sync.Mutex
	calls         BusinessCounts
	retries       int64
	retriedOK     int64
	invalidations int64
	errors        map[string]int64
	spans         map[string]Span
	maxGap        time.Duration
	gaps          []Gap
	dead          []DeadCall
}

func (s *readerState) fail(kind string) {
	now := time.Now()
	s.mu.Lock()
	s.errors[kind]++
	s.spans[kind] = s.spans[kind].merge(Span{First: now, Last: now})
	s.mu.Unlock()
}

func (s *readerState) gap(g Gap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.Took > s.maxGap {
		s.maxGap = g.Took
	}
	if g.Took >= gapReportMin && len(s.gaps) < 1000 {
		s.gaps = append(s.gaps, g)
	}
}

func (s *readerState) answer(app string, at tokencache.TransportAttempt, retry bool) {
	code, tok := at.Errcode, at.Token
	s.mu.Lock()
	defer s.mu.Unlock()
	if retry {
		s.retries++
		if code == 0 {
			s.retriedOK++
		}
	}
	switch code {
	case 0:
		s.calls.OK++
		return
	case 40001:
		s.calls.Superseded++
	case 42001:
		s.calls.Expired++
	case 40014:
		s.calls.Invalid++
	default:
		s.calls.Other++
		return
	}
	d := DeadCall{At: time.Now(), Code: code, Token: at.Fingerprint, App: app, Reader: s.id,
		HandedOut: at.Sent, Version: tok.Version, FetchedAt: tok.FetchedAt, UsableUntil: tok.UsableUntil}
	if a, ok := s.announced[app]; ok {
		d.Announced = a.version + " at " + a.at.UTC().Format("15:04:05.000")
	}
	s.keepDead(d)
	if s.log != nil {
		s.log.Warn("chaos reader: business call refused the token", "app", app, "errcode", code, "token", d.Token,
			"version", d.Version, "handed_out", d.HandedOut, "fetched_at", d.FetchedAt, "usable_until", d.UsableUntil, "retry", retry,
			"last_announced", d.Announced)
	}
}

// keepDead keeps d for the next line (at most 1000 per line); s.mu held.
func (s *readerState) keepDead(d DeadCall) {
	d.Reader = s.id
	if len(s.dead) < 1000 {
		s.dead = append(s.dead, d)
	}
}

// deadCall records a dead-token answer an SDK goroutine saw (sdk.go).
func (s *readerState) deadCall(d DeadCall) {
	s.mu.Lock()
	s.keepDead(d)
	s.mu.Unlock()
	if s.log != nil {
		s.log.Warn("chaos reader: a business call through the gateway was answered with a dead token by the upstream",
			"app", d.App, "errcode", d.Code, "token", d.Token)
	}
}

// line snapshots the counts and takes the pending gaps and dead calls.
func (s *readerState) line(id int, c *tokencache.Cache, final bool) ReaderLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs, spans := addCounts(nil, s.errors), maps.Clone(s.spans)
	l := ReaderLine{Reader: id, PID: os.Getpid(), At: time.Now(), Final: final, Calls: s.calls, Retries: s.retries,
		RetriedOK: s.retriedOK, Invalidations: s.invalidations, Errors: errs, ErrorSpans: spans, MaxGap: s.maxGap,
		Gaps: s.gaps, Dead: s.dead, Cache: c.Admin().Stats()}
	s.gaps, s.dead = nil, nil
	return l
}

// RunReader is "chaos reader": Goroutines goroutines each take a token,
// call the business API with it and, when the upstream says the token is
// dead, report it with Invalidate and retry once, as an application does.
// It prints a ReaderLine every ReportEvery and a final one when ctx ends.
func RunReader(ctx context.Context, rc ReaderConfig, out io.Writer) error {
	secret := os.Getenv(SecretEnv)
	if secret == "" {
		return fmt.Errorf("chaos reader: $%s is empty", SecretEnv)
	}
	ctx, cancel := context.WithTimeout(ctx, rc.MaxDuration)
	defer cancel()

	rdb := redis.NewClient(&redis.Options{
		Addr: rc.RedisAddr, DialTimeout: 300 * time.Millisecond, ReadTimeout: 400 * time.Millisecond,
		WriteTimeout: 400 * time.Millisecond, MaxRetries: 1, PoolSize: rc.Goroutines + 10,
	})
	defer rdb.Close()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConns: rc.Goroutines * 2, MaxIdleConnsPerHost: rc.Goroutines * 2, IdleConnTimeout: time.Minute,
	}}
	apps := AppIDs(rc.Apps)
	wapps := make([]wechat.App, len(apps))
	for i, a := range apps {
		wapps[i] = wechat.App{ID: a, Secret: wechat.Secret(secret), Mode: wechat.Classic}
	}
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(rc.UpstreamURL), wechat.WithHTTPClient(hc)), wapps...)
	if err != nil {
		return fmt.Errorf("chaos reader: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("reader", rc.ID)
	cache, err := tokencache.New(rdb, src, rc.Cache.options(rc.KeyPrefix, rc.Grace,
		tokencache.WithBackoff(200*time.Millisecond, 2*time.Second), tokencache.WithLogger(logger))...)
	if err != nil {
		return fmt.Errorf("chaos reader: %w", err)
	}
	defer cache.Close()
	pages, err := newPageSigner(rdb, cache, hc, rc, logger)
	if err != nil {
		return fmt.Errorf("chaos reader: %w", err)
	}
	defer pages.close()
	var sdk sdkState
	gatewayKey := os.Getenv(GatewayKeyEnv)
	if rc.GatewayGoroutines > 0 && gatewayKey == "" {
		return fmt.Errorf("chaos reader: --gateway-goroutines set but $%s is empty", GatewayKeyEnv)
	}

	st := &readerState{id: rc.ID, log: logger, errors: make(map[string]int64), spans: make(map[string]Span),
		announced: make(map[string]announcement)}
	// A subscription of our own to the cache's change channel: when the
	// cache hands out a dead token, the report can say whether this
	// process had been told of the newer one.
	watch := rdb.Subscribe(ctx, tokencache.EventsChannel(rc.KeyPrefix))
	defer watch.Close()
	go st.watchAnnouncements(watch.Channel())
	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	emit := func(final bool) {
		l := st.line(rc.ID, cache, final)
		l.Signatures = pages.counts()
		l.Gateway = sdk.counts()
		encMu.Lock()
		defer encMu.Unlock()
		_ = enc.Encode(l)
		if f, ok := out.(*bufio.Writer); ok {
			_ = f.Flush()
		}
	}

	business := newBusinessCaller(cache, hc, rc.UpstreamURL, apps, st)
	var wg sync.WaitGroup
	maxIter := int(rc.MaxDuration/rc.Interval) + 1
	wg.Add(1)
	go func() { defer wg.Done(); pages.run(ctx, apps, rc.Interval, maxIter) }()
	for g := 0; g < rc.Goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(g)))
			runCaller(ctx, business, apps, rng, rc.Interval, maxIter, st)
		}()
	}
	for g := 0; g < rc.GatewayGoroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(1000+g)))
			runCaller(ctx, newSDKCaller(rc.Gateways, rc.ID+g, gatewayKey, hc, &sdk, st), apps, rng, rc.Interval, maxIter, st)
		}()
	}
	ticker := time.NewTicker(rc.ReportEvery)
	defer ticker.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-ticker.C:
			emit(false)
		}
	}
	wg.Wait()
	emit(true)
	return nil
}

// caller makes one business call for an app; ok means it was answered
// with errcode 0, cause says why not.
type caller interface {
	call(ctx context.Context, app string) (ok bool, cause string)
}

// runCaller is one goroutine's loop: bounded by ctx and by maxIter.
func runCaller(ctx context.Context, business caller, apps []string, rng *rand.Rand, interval time.Duration, maxIter int, st *readerState) {
	var gapStart time.Time // when this goroutine last lost its token; zero while it has one
	var gapApp, gapCause string
	for i := 0; i < maxIter && ctx.Err() == nil; i++ {
		app := apps[rng.IntN(len(apps))]
		began := time.Now()
		ok, cause := business.call(ctx, app)
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			return // a call cut short by the shutdown proves nothing
		case ok && !gapStart.IsZero():
			st.gap(Gap{Start: gapStart, End: now, Took: now.Sub(gapStart), App: gapApp, Cause: gapCause})
			gapStart = time.Time{}
		case ok:
			// A call that waited (e.g. for a fetch) is a gap of its own.
			st.gap(Gap{Start: began, End: now, Took: now.Sub(began), App: app, Cause: "slow"})
		case gapStart.IsZero():
			gapStart, gapApp, gapCause = began, app, cause
		}
		// Pacing, not synchronisation: keeps 200+ callers from
		// saturating a small machine. Jitter de-synchronises them.
		pause := interval/2 + time.Duration(rng.Int64N(int64(interval)))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if !gapStart.IsZero() {
		now := time.Now()
		st.gap(Gap{Start: gapStart, End: now, Took: now.Sub(gapStart), App: gapApp, Cause: gapCause + " (until shutdown)"})
	}
}

// deadTokenCode says whether a business API's errcode says the token is
// no longer valid: wechat's rule (40001, 40014, 42001).
func deadTokenCode(code int) bool {
	return errors.Is(wechat.ClassifyBusiness(code), wechat.ErrTokenInvalid)
}

// errKind names err for the report by the library's classification: a
// hold and its cause, the cache's own error (tokencache.Sentinel, by its
// message), a timeout, or WeChat's class (wechat.ClassName). It never
// prints the error itself, which may carry a URL.
func errKind(err error) string {
	var held *tokencache.HeldError
	if errors.As(err, &held) {
		return "held (" + errKind(held.Err) + ")"
	}
	if s := tokencache.Sentinel(err); s != nil {
		return strings.TrimPrefix(s.Error(), "tokencache: ")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if class := wechat.ClassName(err); class != "error" {
		return "upstream " + class
	}
	return "other"
}

// businessCaller calls GET /cgi-bin/get_api_domain_ip with a token.
// businessCaller calls a business API the way an app does: through
// tokencache.Transport, which adds the token and, on 40001/40014/42001,
// reports it with Invalidate and retries once. Its observer hook counts what
// each call met.
type businessCaller struct {
	base    string
	clients map[string]*http.Client // by app: a Transport serves one app
}

func newBusinessCaller(cache *tokencache.Cache, hc *http.Client, base string, apps []string, st *readerState) *businessCaller {
	b := &businessCaller{base: base, clients: make(map[string]*http.Client, len(apps))}
	for _, app := range apps {
		t := &tokencache.Transport{Source: cache.App(app), BaseURL: base, Base: hc.Transport,
			Observe: func(ev tokencache.TransportEvent) { st.observe(app, ev) }}
		b.clients[app] = &http.Client{Timeout: hc.Timeout, Transport: t,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return b
}

// call makes one business call for app. ok means it was answered with
// errcode 0; cause says why not.
func (b *businessCaller) call(ctx context.Context, app string) (ok bool, cause string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/cgi-bin/get_api_domain_ip", nil)
	if err != nil {
		return false, "build request"
	}
	resp, err := b.clients[app].Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, "shutdown" // cut short by the stop, not a failure
		}
		return false, "call: " + errKind(err) // the kind only: never print a *url.Error
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil || resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("business: HTTP %d", resp.StatusCode)
	}
	var r struct {
		Errcode int `json:"errcode"`
	}
	if json.Unmarshal(body, &r) != nil {
		return false, "business: answer is not JSON"
	}
	if r.Errcode != 0 {
		return false, fmt.Sprintf("business: errcode %d", r.Errcode)
	}
	return true, ""
}

// observe counts one call as Transport saw it: the token it sent and the
// answer, the report and the retry.
func (s *readerState) observe(app string, ev tokencache.TransportEvent) {
	switch {
	case ev.TokenErr != nil:
		s.fail("token: " + errKind(ev.TokenErr))
		return
	case ev.First.Sent.IsZero():
		return
	case ev.First.Err != nil && ev.First.Status == 0:
		s.fail("business: request failed")
		return
	}
	s.answer(app, ev.First, false)
	if !ev.Invalidated {
		return
	}
	s.mu.Lock()
	s.invalidations++
	s.mu.Unlock()
	if ev.InvalidateErr != nil {
		s.fail("invalidate: " + errKind(ev.InvalidateErr))
		return
	}
	if !ev.Retried {
		return
	}
	s.answer(app, ev.Retry, true)
	if ev.Retry.Errcode != 0 {
		s.fail(fmt.Sprintf("business: errcode %d after invalidate and retry", ev.Retry.Errcode))
	}
}

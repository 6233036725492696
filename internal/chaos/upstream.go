package chaos

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

const bucketWidth = 100 * time.Millisecond

// BusinessCounts are business calls by the upstream's answer.
type BusinessCounts struct {
	OK         int64 `json:"ok"`
	Superseded int64 `json:"errcode_40001"`
	Expired    int64 `json:"errcode_42001"`
	Invalid    int64 `json:"errcode_40014"`
	Other      int64 `json:"other"`
}

// Dead is the calls made with a token WeChat no longer accepts.
func (b BusinessCounts) Dead() int64 { return b.Superseded + b.Expired + b.Invalid }

func (b BusinessCounts) add(o BusinessCounts) BusinessCounts {
	return BusinessCounts{b.OK + o.OK, b.Superseded + o.Superseded, b.Expired + o.Expired, b.Invalid + o.Invalid, b.Other + o.Other}
}

// DeadCall is one business call the upstream refused for its token.
type DeadCall struct {
	At    time.Time `json:"at"`
	Code  int       `json:"errcode"`
	Token string    `json:"token_fingerprint"`
	App   string    `json:"app,omitempty"`
	// What the reader knew (readers' view only): which reader, when the
	// cache handed the token out, and the token as the cache described it.
	Reader      int       `json:"reader,omitempty"`
	HandedOut   time.Time `json:"handed_out,omitzero"`
	Version     int64     `json:"version,omitempty"`
	FetchedAt   time.Time `json:"fetched_at,omitzero"`
	UsableUntil time.Time `json:"usable_until,omitzero"`
	// Announced is the last change message the reader's own subscription
	// saw for the app before the call ("<version> at <time>").
	Announced string `json:"last_announced,omitempty"`
	// Via is "gateway" for a call an SDK goroutine made through a
	// replica's gateway (sdk.go), "" for the library's.
	Via string `json:"via,omitempty"`
}

// tokenCall is one request to the token endpoint, as the fake's listener
// saw it arrive.
type tokenCall struct {
	at      time.Time
	port    int    // the caller's source port
	who     string // the process that sent it, when it could be found
	outcome string // what the fake answered
	minted  int    // tokens the fake minted for it (whether or not the reply arrived)
	end     time.Time
}

// upstream is the fake WeChat behind a recording listener: it timestamps
// every token request and every business answer, and can freeze the
// sender of the next token request (the holder of that app's fetch lock).
type upstream struct {
	fake   *wechattest.Server
	srv    *http.Server
	ln     net.Listener
	url    string
	port   int
	origin time.Time
	apps   []string

	mu      sync.Mutex
	calls   map[string][]tokenCall // by app
	minted  map[string]int         // the fake's Minted count per app, as last seen
	buckets []BusinessCounts       // by bucketWidth since origin
	dead    []DeadCall

	// hook, if set, is called (once) with the next token request before
	// the fake sees it; it returns false to stay armed.
	hook atomic.Pointer[func(app string, port int) bool]
	// identify, if set, names the process behind a source port.
	identify func(port int) string

	watches []*tokenWatch // guarded by mu
}

// tokenWatch records who uses one token from a moment on.
type tokenWatch struct {
	token string
	since time.Time
	uses  map[int]*portUse // by the caller's source port
}

type portUse struct {
	calls, ok, dead int
	first, last     time.Time
}

// watchToken starts recording the business calls made with token from
// since on; unwatch ends it and returns them by source port.
func (u *upstream) watchToken(token string, since time.Time) *tokenWatch {
	w := &tokenWatch{token: token, since: since, uses: map[int]*portUse{}}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.watches = append(u.watches, w)
	return w
}

func (u *upstream) unwatch(w *tokenWatch) map[int]portUse {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, x := range u.watches {
		if x == w {
			u.watches = append(u.watches[:i], u.watches[i+1:]...)
			break
		}
	}
	out := make(map[int]portUse, len(w.uses))
	for port, pu := range w.uses {
		out[port] = *pu
	}
	return out
}

// tokenOutcome summarises a token-endpoint answer from its head.
func tokenOutcome(head []byte) string {
	switch {
	case len(head) == 0:
		return "no reply"
	case bytes.HasPrefix(head, []byte(`{"access_token"`)):
		return "token"
	case bytes.HasPrefix(head, []byte(`{"errcode"`)):
		return "errcode " + strconv.Itoa(errcodeOf(head))
	case bytes.HasPrefix(head, []byte("<html")):
		return "html"
	}
	return "other"
}

func startUpstream(apps []string, secret string, lifetime, grace time.Duration, quota int) (*upstream, error) {
	opts := []wechattest.Option{wechattest.WithLifetime(lifetime), wechattest.WithGrace(grace), wechattest.WithDailyQuota(quota)}
	opts = append(opts, ticketOptions(lifetime, grace)...) // signing.go
	for _, a := range apps {
		opts = append(opts, wechattest.WithApp(a, secret))
	}
	u := &upstream{fake: wechattest.NewHandler(opts...), calls: make(map[string][]tokenCall), minted: make(map[string]int), origin: time.Now(), apps: apps}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake wechat: listen: %w", err)
	}
	u.port = ln.Addr().(*net.TCPAddr).Port
	u.url = "http://" + ln.Addr().String()
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	u.ln = ln
	return u, nil
}

// serve starts answering; set identify before.
func (u *upstream) serve() { go func() { _ = u.srv.Serve(u.ln) }() }

func (u *upstream) close() {
	u.fake.Close() // releases latency waits first
	_ = u.srv.Close()
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case wechat.EndpointToken:
		app := r.URL.Query().Get("appid")
		port := remotePort(r.RemoteAddr)
		at := time.Now()
		if h := u.hook.Swap(nil); h != nil && !(*h)(app, port) {
			u.hook.CompareAndSwap(nil, h)
		}
		who := ""
		if u.identify != nil {
			who = u.identify(port)
		}
		u.mu.Lock()
		u.calls[app] = append(u.calls[app], tokenCall{at: at, port: port, who: who})
		i := len(u.calls[app]) - 1
		u.mu.Unlock()
		rec := &recordingWriter{ResponseWriter: w}
		// Deferred: a handler that drops the connection may end by
		// panicking with http.ErrAbortHandler.
		defer u.recordTokenAnswer(app, i, rec)
		u.fake.Handler().ServeHTTP(rec, r)
	case "/cgi-bin/get_api_domain_ip":
		if r.Header.Get(wechat.CheckHeader) != "" {
			// A cache asking whether a reported token is alive: not a
			// business call, and a dead answer is what it is there to find.
			u.fake.Handler().ServeHTTP(w, r)
			return
		}
		rec := &recordingWriter{ResponseWriter: w}
		u.fake.Handler().ServeHTTP(rec, r)
		u.recordBusiness(time.Now(), rec.head.Bytes(), r.URL.Query().Get("access_token"), remotePort(r.RemoteAddr))
	default:
		u.fake.Handler().ServeHTTP(w, r)
	}
}

func (u *upstream) recordTokenAnswer(app string, i int, rec *recordingWriter) {
	outcome := tokenOutcome(rec.head.Bytes())
	minted := u.fake.Stats(app).Minted
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls[app][i].outcome = outcome
	// Two requests of one app at once (a lock failure, or the
	// transport resending a GET after a lost reply) may both have
	// minted by now: the first to get here takes both, so the count
	// is exact even when the split between them is not.
	if minted > u.minted[app] {
		u.calls[app][i].minted = minted - u.minted[app]
		u.minted[app] = minted
	}
	u.calls[app][i].end = time.Now()
}

func (u *upstream) recordBusiness(at time.Time, body []byte, token string, port int) {
	code := errcodeOf(body)
	i := int(at.Sub(u.origin) / bucketWidth)
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, w := range u.watches {
		if w.token != token || at.Before(w.since) {
			continue
		}
		pu := w.uses[port]
		if pu == nil {
			pu = &portUse{first: at}
			w.uses[port] = pu
		}
		pu.calls++
		pu.last = at
		switch {
		case code == 0:
			pu.ok++
		case deadTokenCode(code):
			pu.dead++
		}
	}
	for len(u.buckets) <= i {
		u.buckets = append(u.buckets, BusinessCounts{})
	}
	b := &u.buckets[i]
	switch code {
	case 0:
		b.OK++
		return
	case 40001:
		b.Superseded++
	case 42001:
		b.Expired++
	case 40014:
		b.Invalid++
	default:
		b.Other++
		return
	}
	if len(u.dead) < 100000 {
		u.dead = append(u.dead, DeadCall{At: at, Code: code, Token: wechat.Fingerprint(token)})
	}
}

// business sums the answers between from and to (bucket resolution).
func (u *upstream) business(from, to time.Time) BusinessCounts {
	u.mu.Lock()
	defer u.mu.Unlock()
	var sum BusinessCounts
	lo, hi := int(from.Sub(u.origin)/bucketWidth), int(to.Sub(u.origin)/bucketWidth)
	for i := max(lo, 0); i <= hi && i < len(u.buckets); i++ {
		sum = sum.add(u.buckets[i])
	}
	return sum
}

func (u *upstream) deadCalls() []DeadCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]DeadCall(nil), u.dead...)
}

// tokenCalls returns the token requests per app.
func (u *upstream) tokenCalls() map[string][]tokenCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string][]tokenCall, len(u.calls))
	for k, v := range u.calls {
		m[k] = append([]tokenCall(nil), v...)
	}
	return m
}

// appsInFlight lists the apps with a token request that started by to
// and whose reply was written after from, from one of ports (nil: any).
func (u *upstream) appsInFlight(from, to time.Time, ports map[int]bool) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var apps []string
	for app, calls := range u.calls {
		for _, c := range calls {
			if c.at.After(to) || (!c.end.IsZero() && c.end.Before(from)) || (ports != nil && !ports[c.port]) {
				continue
			}
			apps = append(apps, app)
			break
		}
	}
	return apps
}

// recordingWriter keeps the head of a business answer to read its errcode.
type recordingWriter struct {
	http.ResponseWriter
	head bytes.Buffer
}

// Unwrap lets http.ResponseController reach the connection (the fake
// hijacks it to drop a reply).
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recordingWriter) Write(p []byte) (int, error) {
	if room := 64 - w.head.Len(); room > 0 {
		w.head.Write(p[:min(room, len(p))])
	}
	return w.ResponseWriter.Write(p)
}

// errcodeOf reads {"errcode":N,...}; an answer without errcode is 0 (ok),
// one that cannot be read is -2.
func errcodeOf(body []byte) int {
	rest, ok := bytes.CutPrefix(body, []byte(`{"errcode":`))
	if !ok {
		if bytes.HasPrefix(body, []byte(`{"ip_list"`)) {
			return 0
		}
		return -2
	}
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return -2
	}
	n, err := strconv.Atoi(string(rest[:end]))
	if err != nil {
		return -2
	}
	return n
}

func remotePort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return n
}

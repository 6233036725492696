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
}

// tokenCall is one request to the token endpoint, as the fake's listener
// saw it arrive.
type tokenCall struct {
	at   time.Time
	port int // the caller's source port
}

// upstream is the fake WeChat behind a recording listener: it timestamps
// every token request and every business answer, and can freeze the
// sender of the next token request (the holder of that app's fetch lock).
type upstream struct {
	fake   *wechattest.Server
	srv    *http.Server
	url    string
	port   int
	origin time.Time
	apps   []string

	mu      sync.Mutex
	calls   map[string][]tokenCall // by app
	buckets []BusinessCounts       // by bucketWidth since origin
	dead    []DeadCall

	// hook, if set, is called (once) with the next token request before
	// the fake sees it; it returns false to stay armed.
	hook atomic.Pointer[func(app string, port int) bool]
}

func startUpstream(apps []string, secret string, lifetime, grace time.Duration, quota int) (*upstream, error) {
	opts := []wechattest.Option{wechattest.WithLifetime(lifetime), wechattest.WithGrace(grace), wechattest.WithDailyQuota(quota)}
	for _, a := range apps {
		opts = append(opts, wechattest.WithApp(a, secret))
	}
	u := &upstream{fake: wechattest.NewHandler(opts...), calls: make(map[string][]tokenCall), origin: time.Now(), apps: apps}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake wechat: listen: %w", err)
	}
	u.port = ln.Addr().(*net.TCPAddr).Port
	u.url = "http://" + ln.Addr().String()
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstream) close() {
	u.fake.Close() // releases latency waits first
	_ = u.srv.Close()
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case wechat.EndpointToken:
		app := r.URL.Query().Get("appid")
		port := remotePort(r.RemoteAddr)
		u.mu.Lock()
		u.calls[app] = append(u.calls[app], tokenCall{at: time.Now(), port: port})
		u.mu.Unlock()
		if h := u.hook.Swap(nil); h != nil && !(*h)(app, port) {
			u.hook.CompareAndSwap(nil, h)
		}
		u.fake.Handler().ServeHTTP(w, r)
	case "/cgi-bin/get_api_domain_ip":
		rec := &recordingWriter{ResponseWriter: w}
		u.fake.Handler().ServeHTTP(rec, r)
		u.recordBusiness(time.Now(), rec.head.Bytes(), r.URL.Query().Get("access_token"))
	default:
		u.fake.Handler().ServeHTTP(w, r)
	}
}

func (u *upstream) recordBusiness(at time.Time, body []byte, token string) {
	code := errcodeOf(body)
	i := int(at.Sub(u.origin) / bucketWidth)
	u.mu.Lock()
	defer u.mu.Unlock()
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

// appsCalledBetween lists the apps with a token request in [from, to].
func (u *upstream) appsCalledBetween(from, to time.Time) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var apps []string
	for app, calls := range u.calls {
		for _, c := range calls {
			if !c.at.Before(from) && !c.at.After(to) {
				apps = append(apps, app)
				break
			}
		}
	}
	return apps
}

// recordingWriter keeps the head of a business answer to read its errcode.
type recordingWriter struct {
	http.ResponseWriter
	head bytes.Buffer
}

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

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/gateway"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Gateway readers: besides the library's callers, every reader runs
// goroutines that behave like a WeChat SDK in another language pointed at
// the replicas' WeChat-compatible gateways (internal/gateway). Each keeps a
// token cache of its own, trusts expires_in to the last second (the worst
// SDK there is), fetches through /cgi-bin/token with the run's gateway
// credential in place of the AppSecret, calls the business API with the
// token it holds, and on 40001/40014/42001 drops it, fetches again and
// retries once, as co-wechat-api and EasyWeChat do. It reaches the
// replicas' gateways as an SDK behind a round-robin load balancer would:
// each request goes to the next one, so a token handed out by one replica
// is used on the others (recognised through the Redis ledger, or refused
// there after Redis lost it), and when one does not answer (killed,
// restarting) the request goes on to the next.
//
// What matters is the upstream's count: a gateway never sends a business
// call with the caller's token, only with the cache's current one, so a
// stale SDK token must never become a dead call upstream. A 40001 the
// gateway answers itself (a token it does not recognise, e.g. after Redis
// lost its ledger) is the SDK's cue to refetch, not a dead call: it never
// reached the upstream. A dead-token answer that did come from the
// upstream is reported like a library reader's, and charged to the fault
// windows.

// GatewayKeyEnv carries the run's gateway credential to the replicas
// (gateway.credentials key_env) and the readers.
const GatewayKeyEnv = "CHAOS_GATEWAY_KEY"

// GatewayCounts are what a reader's SDK goroutines saw.
type GatewayCounts struct {
	Calls   int64 `json:"calls"`   // business calls answered (first tries and retries)
	OK      int64 `json:"ok"`      // answered errcode 0
	Fetches int64 `json:"fetches"` // tokens fetched through /cgi-bin/token
	// RefusedHere is 40001 answered by the gateway itself (a token it does
	// not recognise): never forwarded, so no dead call.
	RefusedHere int64 `json:"refused_by_gateway"`
	// Dead is a dead-token answer (40001/40014/42001) from the upstream,
	// relayed by the gateway: the failure to prevent.
	Dead      int64            `json:"dead"`
	Retried   int64            `json:"retried"`
	RetriedOK int64            `json:"retried_ok"`
	Failovers int64            `json:"failovers"` // a gateway did not answer; the next one was tried
	Errors    map[string]int64 `json:"errors,omitempty"`
}

func (a GatewayCounts) add(b GatewayCounts) GatewayCounts {
	a.Calls += b.Calls
	a.OK += b.OK
	a.Fetches += b.Fetches
	a.RefusedHere += b.RefusedHere
	a.Dead += b.Dead
	a.Retried += b.Retried
	a.RetriedOK += b.RetriedOK
	a.Failovers += b.Failovers
	a.Errors = addCounts(a.Errors, b.Errors)
	return a
}

func (a GatewayCounts) String() string {
	return fmt.Sprintf("gateway (SDK-style) calls: %d answered, ok %d, dead-token answers from the upstream %d (target 0), refused by the gateway itself %d (refetched), retried %d (ok %d), tokens fetched %d, fail-overs to another gateway %d; errors %v",
		a.Calls, a.OK, a.Dead, a.RefusedHere, a.Retried, a.RetriedOK, a.Fetches, a.Failovers, a.Errors)
}

// violations are what the report must flag (the dead calls themselves are
// charged with the library readers').
func (a GatewayCounts) violations(configured bool) []string {
	if configured && a.OK == 0 {
		return []string{"the gateway readers made no successful business call"}
	}
	return nil
}

// sdkState is the counts of one reader's SDK goroutines.
type sdkState struct {
	mu sync.Mutex
	c  GatewayCounts
}

func (s *sdkState) update(f func(c *GatewayCounts)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.c)
}

func (s *sdkState) fail(kind string) {
	s.update(func(c *GatewayCounts) {
		if c.Errors == nil {
			c.Errors = map[string]int64{}
		}
		c.Errors[kind]++
	})
}

func (s *sdkState) counts() GatewayCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	c.Errors = addCounts(nil, s.c.Errors)
	return c
}

// sdkToken is a token as an SDK caches it.
type sdkToken struct {
	value   string
	expires time.Time
}

// sdkCaller is one SDK goroutine: its own token per app, its place in the
// list of gateways.
type sdkCaller struct {
	gateways []string // base URLs
	next     int      // the gateway its next request goes to
	key      string   // the gateway credential, sent as the "secret"
	hc       *http.Client
	tokens   map[string]sdkToken
	st       *sdkState
	reader   *readerState // dead calls go with the library readers'
}

func newSDKCaller(gateways []string, start int, key string, hc *http.Client, st *sdkState, reader *readerState) *sdkCaller {
	return &sdkCaller{gateways: gateways, next: start % len(gateways), key: key, hc: hc,
		tokens: map[string]sdkToken{}, st: st, reader: reader}
}

// call makes one business call for app the way an SDK does: with its
// cached token, fetched first if it has none or it has expired; on a
// dead-token answer it drops the token, fetches a new one and retries once.
func (s *sdkCaller) call(ctx context.Context, app string) (ok bool, cause string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; attempt < 2; attempt++ {
		tok, ok := s.tokens[app]
		if !ok || !time.Now().Before(tok.expires) {
			var err error
			if tok, err = s.fetch(ctx, app); err != nil {
				return false, err.Error()
			}
			s.tokens[app] = tok
		}
		code, local, err := s.business(ctx, app, tok.value)
		switch {
		case err != nil:
			return false, err.Error()
		case code == 0:
			if attempt > 0 {
				s.st.update(func(c *GatewayCounts) { c.RetriedOK++ })
			}
			return true, ""
		case !deadTokenCode(code):
			s.st.fail(fmt.Sprintf("business: errcode %d", code))
			return false, fmt.Sprintf("gateway business: errcode %d", code)
		}
		if !local {
			s.st.update(func(c *GatewayCounts) { c.Dead++ })
			s.reader.deadCall(DeadCall{At: time.Now(), Code: code, Token: wechat.Fingerprint(tok.value), App: app, Via: "gateway"})
		} else {
			s.st.update(func(c *GatewayCounts) { c.RefusedHere++ })
		}
		delete(s.tokens, app)
		if attempt == 0 {
			s.st.update(func(c *GatewayCounts) { c.Retried++ })
		}
	}
	return false, "gateway business: dead token after a refetch and a retry"
}

// fetch gets app's token through a gateway, trying each once.
func (s *sdkCaller) fetch(ctx context.Context, app string) (sdkToken, error) {
	q := "/cgi-bin/token?grant_type=client_credential&appid=" + url.QueryEscape(app) + "&secret=" + url.QueryEscape(s.key)
	var r struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Errcode     int    `json:"errcode"`
	}
	if _, err := s.get(ctx, q, &r); err != nil {
		return sdkToken{}, err
	}
	if r.Errcode != 0 || r.AccessToken == "" || r.ExpiresIn <= 0 {
		s.st.fail(fmt.Sprintf("token: errcode %d", r.Errcode))
		return sdkToken{}, fmt.Errorf("gateway token: errcode %d", r.Errcode)
	}
	s.st.update(func(c *GatewayCounts) { c.Fetches++ })
	return sdkToken{value: r.AccessToken, expires: time.Now().Add(time.Duration(r.ExpiresIn) * time.Second)}, nil
}

// business calls the business API with token; local says the gateway
// answered itself (its header), not the upstream.
func (s *sdkCaller) business(ctx context.Context, app, token string) (code int, local bool, err error) {
	var r struct {
		Errcode int `json:"errcode"`
	}
	h, err := s.get(ctx, wechat.EndpointDomainIP+"?access_token="+url.QueryEscape(token), &r)
	if err != nil {
		return 0, false, err
	}
	s.st.update(func(c *GatewayCounts) {
		c.Calls++
		if r.Errcode == 0 {
			c.OK++
		}
	})
	return r.Errcode, h.Get(gateway.HeaderGateway) != "", nil
}

// get sends GET path to the next gateway in turn, moving on (each tried
// once) when one does not answer, and decodes the JSON reply.
func (s *sdkCaller) get(ctx context.Context, path string, into any) (http.Header, error) {
	var lastErr error
	for range s.gateways {
		base := s.gateways[s.next]
		s.next = (s.next + 1) % len(s.gateways)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return nil, errors.New("build request")
		}
		resp, err := s.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, errors.New("shutdown")
			}
			// The kind only: a *url.Error prints the URL, which holds
			// the credential or a token.
			lastErr = errors.New("gateway unreachable: " + errKind(err))
			s.st.update(func(c *GatewayCounts) { c.Failovers++ })
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			s.st.fail(fmt.Sprintf("HTTP %d", resp.StatusCode))
			return nil, fmt.Errorf("gateway: HTTP %d", resp.StatusCode)
		}
		if json.Unmarshal(body, into) != nil {
			s.st.fail("answer is not JSON")
			return nil, errors.New("gateway: answer is not JSON")
		}
		return resp.Header, nil
	}
	s.st.fail("every gateway unreachable")
	return nil, lastErr
}

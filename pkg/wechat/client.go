package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is WeChat's API host.
const DefaultBaseURL = "https://api.weixin.qq.com"

// DefaultTimeout bounds one token request when no *http.Client is given.
const DefaultTimeout = 10 * time.Second

// Client fetches access tokens from WeChat. It holds no credentials (they
// are passed per call) and is immutable after NewClient, so it is safe for
// concurrent use.
type Client struct {
	baseURL    string
	base       *url.URL // parsed baseURL; nil when it is invalid
	baseErr    string   // why baseURL is invalid
	httpClient *http.Client
	now        func() time.Time
}

// Option configures a Client.
type Option func(*Client)

// WithBaseURL points the client at another host (a fake WeChat in tests, an
// egress proxy in production). A trailing slash is ignored; an invalid URL
// makes every call fail with an ErrConfig error.
func WithBaseURL(u string) Option { return func(c *Client) { c.baseURL = u } }

// WithHTTPClient sets the HTTP client. The client never follows redirects
// whatever h says: a redirect would carry the AppSecret (in the classic
// query, in the stable body) to a host that is not WeChat, so a 3xx is
// reported as a malformed reply instead. h itself is not modified.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.httpClient = h } }

// WithClock sets the clock used to stamp Token.FetchedAt.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// NewClient returns a client for DefaultBaseURL with a DefaultTimeout HTTP
// client and the system clock, changed by opts.
func NewClient(opts ...Option) *Client {
	c := &Client{baseURL: DefaultBaseURL, now: time.Now}
	for _, opt := range opts {
		opt(c)
	}
	if c.now == nil {
		c.now = time.Now
	}
	hc := http.Client{Timeout: DefaultTimeout}
	if c.httpClient != nil {
		hc = *c.httpClient // a copy: the caller's client keeps its own redirect policy
	}
	hc.CheckRedirect = refuseRedirect
	c.httpClient = &hc
	c.base, c.baseErr = parseBaseURL(c.baseURL)
	return c
}

func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// parseBaseURL validates the base URL. It holds no secret, so its parse
// error can be shown.
func parseBaseURL(s string) (*url.URL, string) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	switch {
	case err != nil:
		return nil, "invalid base URL (not shown: a URL can hold a password)"
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, "base URL " + quote(s) + " must use http or https"
	case u.Host == "":
		return nil, "base URL " + quote(s) + " has no host"
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		// Not quoted: user info or a query is where a password would be.
		return nil, "base URL must not carry a query, fragment or user info (not shown: it may hold a password)"
	}
	return u, ""
}

// ClassicToken fetches a new token with GET /cgi-bin/token. Every successful
// call invalidates the app's previous classic token (after WeChat's 5-minute
// overlap) and counts against its daily quota of 2000.
//
// Errors: *Error for an errcode, *ReplyError for a malformed reply,
// *RequestError when no reply arrived, *ConfigError for bad arguments.
// None of them contains the secret.
func (c *Client) ClassicToken(ctx context.Context, appID string, secret Secret) (Token, error) {
	if err := c.checkCall(EndpointToken, appID, secret); err != nil {
		return Token{}, err
	}
	q := url.Values{}
	q.Set("grant_type", "client_credential")
	q.Set("appid", appID)
	q.Set("secret", secret.Reveal())
	return c.fetch(ctx, EndpointToken, http.MethodGet, q.Encode(), nil, secret.Reveal())
}

// StableToken fetches the app's stable token with POST /cgi-bin/stable_token.
// With forceRefresh false, concurrent callers get the same token and cannot
// invalidate each other. forceRefresh true mints a new token, invalidating
// the old one; WeChat allows 20 a day, 30 s apart, so only an explicit
// operator request should set it.
func (c *Client) StableToken(ctx context.Context, appID string, secret Secret, forceRefresh bool) (Token, error) {
	if err := c.checkCall(EndpointStableToken, appID, secret); err != nil {
		return Token{}, err
	}
	body, err := json.Marshal(stableTokenRequest{
		GrantType:    "client_credential",
		AppID:        appID,
		Secret:       secret.Reveal(),
		ForceRefresh: forceRefresh,
	})
	if err != nil { // only strings and a bool: cannot happen
		return Token{}, &ConfigError{AppID: appID, Reason: "cannot encode the stable_token request"}
	}
	return c.fetch(ctx, EndpointStableToken, http.MethodPost, "", body, secret.Reveal())
}

type stableTokenRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

func (c *Client) checkCall(endpoint, appID string, secret Secret) error {
	switch {
	case c.base == nil:
		return &ConfigError{AppID: appID, Reason: c.baseErr}
	case appID == "":
		return &ConfigError{Reason: endpoint + ": empty appid"}
	case secret == "":
		return &ConfigError{AppID: appID, Reason: endpoint + ": empty secret"}
	}
	return nil
}

// fetch sends one token request and validates its reply. The request URL
// and body carry the secret, so no error built here quotes them.
func (c *Client) fetch(ctx context.Context, endpoint, method, query string, body []byte, secret string) (Token, error) {
	if err := ctx.Err(); err != nil {
		// Checked here so that "never sent" is certain, not inferred.
		return Token{}, &RequestError{Endpoint: endpoint, Sent: false, Err: context.Cause(ctx)}
	}
	var progress sendProgress
	ctx = httptrace.WithClientTrace(ctx, progress.trace())

	u := *c.base
	u.Path = strings.TrimRight(c.base.Path, "/") + endpoint
	u.RawPath = ""
	var reqBody io.Reader
	if body != nil {
		reqBody = bytes.NewReader(body)
	}
	// The URL is parsed without its query, and the query set afterwards: a
	// parse error never has the secret to quote.
	req, err := http.NewRequestWithContext(ctx, method, u.String(), reqBody)
	if err != nil {
		return Token{}, &ConfigError{Reason: endpoint + ": cannot build request: " + scrub(err, secret).Error()}
	}
	req.URL.RawQuery = query
	// A connection of its own for every fetch: Go's transport silently
	// re-sends a GET whose reused keep-alive connection closes without a
	// reply, and for a classic fetch that mints a second token (and
	// invalidates the first) behind the caller's back. Fetches happen a few
	// times a day, so the lost reuse costs nothing; a lost reply then
	// surfaces as ErrOutcomeUnknown, which the caller can act on.
	req.Close = true
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	fetchedAt := c.now() // before sending: a token's life starts when WeChat mints it
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return Token{}, &RequestError{Endpoint: endpoint, Sent: progress.maybeSent(), Err: scrub(err, secret)}
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	if err != nil {
		// The status line arrived, so the request was certainly sent.
		return Token{}, &RequestError{Endpoint: endpoint, Sent: true, Err: scrub(err, secret)}
	}
	field := "access_token"
	if endpoint == EndpointTicket {
		field = "ticket"
	}
	tok, err := parseCredentialReply(endpoint, field, resp.StatusCode, reply, fetchedAt, secret)
	if err == nil {
		tok.IssuedAt = issuedAt(resp.Header.Get("Date"))
	}
	return tok, err
}

// issuedAt reads the reply's Date header: when WeChat answered, by WeChat's
// own clock, to the second. Zero if absent or malformed.
func issuedAt(date string) time.Time {
	if date == "" {
		return time.Time{}
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return time.Time{}
	}
	return t
}

// sendProgress records, from httptrace callbacks (which may run on other
// goroutines), how far a request got.
type sendProgress struct {
	getConn atomic.Bool // the transport started looking for a connection
	gotConn atomic.Bool // it had one, so bytes may have been written
	wrote   atomic.Bool // it finished writing (or failed part way)
}

func (p *sendProgress) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn:      func(string) { p.getConn.Store(true) },
		GotConn:      func(httptrace.GotConnInfo) { p.gotConn.Store(true) },
		WroteRequest: func(httptrace.WroteRequestInfo) { p.wrote.Store(true) },
	}
}

// maybeSent reports whether the upstream may have received the request.
// Only "the transport looked for a connection and never got one" proves it
// was not sent. A transport that reports no trace events (a custom
// RoundTripper) proves nothing, so that counts as sent: wrongly assuming
// "not sent" could leave a token in the cache that WeChat has invalidated.
func (p *sendProgress) maybeSent() bool {
	return p.gotConn.Load() || p.wrote.Load() || !p.getConn.Load()
}

// scrub returns err without any URL: a *url.Error prints the request URL,
// whose query holds the secret in a classic fetch, so only its cause is
// kept. If the cause still mentions the secret, its text is redacted and the
// chain dropped, since the secret matters more than the chain.
func scrub(err error, secret string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if err == nil {
		return errors.New("unknown error")
	}
	if msg := err.Error(); secret != "" && redact(msg, secret) != msg {
		return errors.New(redact(msg, secret))
	}
	return err
}

func queryEscape(s string) string { return url.QueryEscape(s) }

// RequestError is a token request that got no reply: the connection failed,
// the context ended, or the HTTP client timed out. It always matches
// ErrTransient, and ErrOutcomeUnknown when the request may have reached
// WeChat (Sent): a classic fetch may then have minted a token, and so
// invalidated the previous one, without our learning its value.
type RequestError struct {
	Endpoint string // path of the API, never a full URL
	Sent     bool   // the request may have been written; false only when certainly not
	Err      error  // the cause, never a *url.Error (which would print the URL)
}

func (e *RequestError) Error() string {
	state := "not sent"
	if e.Sent {
		state = "sent, outcome unknown"
	}
	return "wechat: " + e.Endpoint + ": request failed (" + state + "): " + e.cause()
}

func (e *RequestError) cause() string {
	if e.Err == nil {
		return "unknown error"
	}
	return e.Err.Error()
}

// Unwrap returns the cause, so errors.Is(err, context.DeadlineExceeded) works.
func (e *RequestError) Unwrap() error { return e.Err }

// Is reports whether target is ErrTransient, or ErrOutcomeUnknown for a
// request that may have been sent.
func (e *RequestError) Is(target error) bool {
	return target == ErrTransient || (e.Sent && target == ErrOutcomeUnknown)
}

// ConfigError is a call that cannot succeed until its configuration is
// fixed: unknown or empty appid, empty secret, invalid base URL. It matches
// ErrConfig. It never contains the secret.
type ConfigError struct {
	AppID  string // may be empty
	Reason string
}

func (e *ConfigError) Error() string {
	s := "wechat: "
	if e.AppID != "" {
		s += "app " + quote(e.AppID) + ": "
	}
	return s + e.Reason
}

// Is reports whether target is ErrConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

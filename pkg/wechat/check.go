package wechat

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
)

// EndpointDomainIP is the cheapest business API: it mints nothing, counts
// against no token quota that matters, and answers 40001/40014/42001 for a
// token WeChat no longer accepts.
const EndpointDomainIP = "/cgi-bin/get_api_domain_ip"

// CheckHeader marks a CheckToken request. WeChat ignores it; a test
// upstream (package wechattest) counts such calls as checks, not as
// business calls, so "no business call on a dead token" stays provable.
const CheckHeader = "X-Tokenkeeper-Check"

// CheckToken asks WeChat whether it still accepts token, with one GET of
// EndpointDomainIP. It returns nil if the token is accepted, an *Error
// matching ErrTokenInvalid if it is refused, and another error if WeChat
// could not tell. No error contains the token.
func (c *Client) CheckToken(ctx context.Context, token string) error {
	if c.baseErr != "" {
		return &ConfigError{Reason: c.baseErr}
	}
	u := *c.base
	u.Path = strings.TrimRight(c.base.Path, "/") + EndpointDomainIP
	u.RawPath = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return &ConfigError{Reason: EndpointDomainIP + ": cannot build request: " + scrub(err, token).Error()}
	}
	req.URL.RawQuery = "access_token=" + queryEscape(token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set(CheckHeader, "1")
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return &RequestError{Endpoint: EndpointDomainIP, Sent: true, Err: scrub(err, token)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	if err != nil {
		return &RequestError{Endpoint: EndpointDomainIP, Sent: true, Err: scrub(err, token)}
	}
	if resp.StatusCode != http.StatusOK || len(body) > MaxReplyBytes {
		return &ReplyError{Endpoint: EndpointDomainIP, Status: resp.StatusCode, Reason: "not HTTP 200, or a reply over MaxReplyBytes"}
	}
	return CheckBusinessReply(EndpointDomainIP, body)
}

// Verify implements tokencache.Verifier: it asks WeChat whether it still
// accepts token (CheckToken). appID is only checked to be one of the
// Source's apps.
func (s *Source) Verify(ctx context.Context, appID, token string) error {
	if _, ok := s.apps[appID]; !ok {
		return &ConfigError{AppID: appID, Reason: "unknown appid"}
	}
	return s.client.CheckToken(ctx, token)
}

// ClassName names err's class for metrics and logs: "token_invalid",
// "quota", "config", "transient", or "error" for anything else. It is the
// one place an error becomes a label.
func ClassName(err error) string {
	switch {
	case errors.Is(err, ErrTokenInvalid):
		return "token_invalid"
	case errors.Is(err, ErrQuota):
		return "quota"
	case errors.Is(err, ErrConfig):
		return "config"
	case errors.Is(err, ErrTransient):
		return "transient"
	}
	return "error"
}

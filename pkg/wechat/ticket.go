package wechat

import (
	"context"
	"net/http"
	"net/url"
)

// Ticket kinds getticket serves (its type parameter).
const (
	// TicketJSAPI is the jsapi_ticket that signs JS-SDK configs (wx.config).
	TicketJSAPI = "jsapi"
	// TicketWxCard is the api_ticket that signs card features (card ext,
	// chooseCard).
	TicketWxCard = "wx_card"
)

// TicketKinds lists every kind, in a fixed order.
func TicketKinds() []string { return []string{TicketJSAPI, TicketWxCard} }

// TicketKindProblem is the rule for ticket kinds: what is wrong with kind,
// or "" if nothing is.
func TicketKindProblem(kind string) string {
	switch kind {
	case TicketJSAPI, TicketWxCard:
		return ""
	}
	return "unknown ticket kind " + quote(kind) + ` (want "jsapi" or "wx_card")`
}

// Ticket fetches a ticket of kind (TicketJSAPI or TicketWxCard) with GET
// /cgi-bin/ticket/getticket, authorised by accessToken. The Token it
// returns carries the ticket in Value; FetchedAt is the send time.
//
// WeChat may answer a second call within the validity with the same
// ticket, and says expires_in 7200 either way, so the remaining life of a
// ticket cannot be read from a reply; the caller has to remember when it
// first saw a ticket.
//
// Errors: *Error for an errcode (40001, 40014 and 42001 match
// ErrTokenInvalid: accessToken is dead, not the ticket), *ReplyError for a
// malformed reply (an empty or missing ticket included), *RequestError
// when no reply arrived, *ConfigError for bad arguments. None contains the
// access token (only its Fingerprint) or the ticket.
func (c *Client) Ticket(ctx context.Context, accessToken, kind string) (Token, error) {
	switch {
	case c.base == nil:
		return Token{}, &ConfigError{Reason: c.baseErr}
	case TicketKindProblem(kind) != "":
		return Token{}, &ConfigError{Reason: EndpointTicket + ": " + TicketKindProblem(kind)}
	case accessToken == "":
		return Token{}, &ConfigError{Reason: EndpointTicket + ": empty access token"}
	}
	q := url.Values{}
	q.Set("access_token", accessToken)
	q.Set("type", kind)
	return c.fetch(ctx, EndpointTicket, http.MethodGet, q.Encode(), nil, accessToken)
}

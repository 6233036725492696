package jssdk

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// MaxPageURLBytes bounds the page URL a config is signed for.
const MaxPageURLBytes = 2 << 10

// MaxCardValueBytes bounds each caller value of a card signature.
const MaxCardValueBytes = 256

// Signature is the JS-SDK signature: the SHA-1, in lower-case hex, of
// "jsapi_ticket=T&noncestr=N&timestamp=S&url=U" (keys in ASCII order,
// values raw, not escaped), with U the page URL without its #fragment.
func Signature(ticket, nonce string, timestamp int64, pageURL string) string {
	s := "jsapi_ticket=" + ticket + "&noncestr=" + nonce + "&timestamp=" + strconv.FormatInt(timestamp, 10) + "&url=" + StripFragment(pageURL)
	return sha1Hex(s)
}

// CardSignature is the card signature (cardExt's signature, chooseCard's
// cardSign): the SHA-1, in lower-case hex, of every value, api_ticket
// included, sorted as strings and joined with nothing between them. An
// empty value contributes nothing, so leaving out a field and passing it
// empty sign the same.
func CardSignature(values ...string) string {
	v := append([]string(nil), values...)
	sort.Strings(v)
	return sha1Hex(strings.Join(v, ""))
}

// StripFragment returns u without its '#' and what follows, as the page
// signs location.href.split('#')[0].
func StripFragment(u string) string {
	if i := strings.IndexByte(u, '#'); i >= 0 {
		return u[:i]
	}
	return u
}

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// ParsePageURL validates a page URL to sign: at most MaxPageURLBytes of
// printable ASCII without spaces (a browser's location.href is
// percent-encoded), absolute, http or https, with a host and no user info.
// The error says what is wrong without quoting the URL (it may carry
// someone's query string).
func ParsePageURL(raw string) (*url.URL, error) {
	bad := func(reason string) (*url.URL, error) { return nil, &PageURLError{Reason: reason} }
	switch {
	case raw == "":
		return bad("is empty")
	case len(raw) > MaxPageURLBytes:
		return bad(fmt.Sprintf("is %d bytes, over the %d-byte limit", len(raw), MaxPageURLBytes))
	}
	for i := 0; i < len(raw); i++ {
		if b := raw[i]; b <= 0x20 || b >= 0x7f {
			return bad(fmt.Sprintf("has byte 0x%02x at offset %d: want printable ASCII without spaces (percent-encode the rest)", b, i))
		}
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return bad("does not parse as a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("must be absolute, with scheme http or https")
	case u.Host == "" || u.Hostname() == "":
		return bad("has no host")
	case u.User != nil:
		return bad("must not carry user info")
	}
	return u, nil
}

// PageHostProblem is the rule for the page hosts an API key may be
// limited to: what is wrong with host, or "" if nothing is. A host is
// compared, lower-cased, with the page URL's host name (any port).
func PageHostProblem(host string) string {
	if host == "" || strings.ContainsAny(host, "/:@ ") {
		return "want a bare host name such as m.example.com"
	}
	return ""
}

// PageURLError is a page URL ParsePageURL refuses.
type PageURLError struct{ Reason string }

func (e *PageURLError) Error() string { return "jssdk: page url " + e.Reason }

// ErrNoLiveTicket is returned when the ticket the cache handed out is not
// live at the moment of signing; nothing is signed with it.
var ErrNoLiveTicket = errors.New("jssdk: no live ticket to sign with")

// Tickets hands out an app's current ticket of a kind (wechat.TicketJSAPI
// or wechat.TicketWxCard); *tokencache.Tickets is one.
type Tickets interface {
	Ticket(ctx context.Context, appID, kind string) (tokencache.Token, error)
}

// Config is what wx.config takes (with jsApiList added by the page).
type Config struct {
	AppID     string `json:"appId"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// CardRequest holds the caller's values of a card signature. Empty fields
// are left out. For chooseCard set ChooseCard: the app's appid is then
// signed too, as cardSign requires.
type CardRequest struct {
	CardID     string `json:"card_id"`
	Code       string `json:"code"`
	OpenID     string `json:"openid"`
	Balance    string `json:"balance"`
	LocationID string `json:"location_id"`
	CardType   string `json:"card_type"`
	ChooseCard bool   `json:"choose_card"`
}

// CardSigned is a card signature with the timestamp and nonce it was made
// with: put them, unchanged, in cardExt (timestamp, nonce_str, signature)
// or in chooseCard (timestamp, nonceStr, cardSign).
type CardSigned struct {
	Timestamp string `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
	SignType  string `json:"signType"`
}

// Signer signs configs and card signatures with the tickets of a ticket
// cache. It is safe for concurrent use.
type Signer struct {
	tickets Tickets
	now     func() time.Time
	nonce   func() string
}

// Option configures a Signer.
type Option func(*Signer)

// WithClock sets the clock for timestamps and the liveness check (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(s *Signer) { s.now = now } }

// WithNonce replaces the nonce source (default NewNonce). Only tests
// should: a predictable nonce makes signatures replayable.
func WithNonce(f func() string) Option { return func(s *Signer) { s.nonce = f } }

// NewSigner returns a Signer that takes its tickets from t.
func NewSigner(t Tickets, opts ...Option) (*Signer, error) {
	if t == nil {
		return nil, errors.New("jssdk: nil ticket source")
	}
	s := &Signer{tickets: t, now: time.Now, nonce: NewNonce}
	for _, o := range opts {
		o(s)
	}
	if s.now == nil || s.nonce == nil {
		return nil, errors.New("jssdk: clock and nonce source must not be nil")
	}
	return s, nil
}

// NewNonce returns 26 random characters from crypto/rand (rand.Text: 130
// bits), inside nonceStr's 32-character limit.
func NewNonce() string { return rand.Text() }

// live returns appID's ticket of kind, and the moment it is signed at,
// unless the ticket is not usable at that moment.
func (s *Signer) live(ctx context.Context, appID, kind string) (tokencache.Token, time.Time, error) {
	tok, err := s.tickets.Ticket(ctx, appID, kind)
	if err != nil {
		return tokencache.Token{}, time.Time{}, err
	}
	now := s.now()
	if tok.Value == "" || !now.Before(tok.UsableUntil) {
		return tokencache.Token{}, time.Time{}, fmt.Errorf("%w: app %q, %s ticket %s usable until %s", ErrNoLiveTicket, appID, kind,
			wechat.Fingerprint(tok.Value), tok.UsableUntil.UTC().Format(time.RFC3339))
	}
	return tok, now, nil
}

// Config signs pageURL (validated by ParsePageURL, signed without its
// #fragment) for appID with its current jsapi_ticket.
func (s *Signer) Config(ctx context.Context, appID, pageURL string) (Config, error) {
	if _, err := ParsePageURL(pageURL); err != nil {
		return Config{}, err
	}
	tok, now, err := s.live(ctx, appID, wechat.TicketJSAPI)
	if err != nil {
		return Config{}, err
	}
	ts, nonce := now.Unix(), s.nonce()
	return Config{AppID: appID, Timestamp: ts, NonceStr: nonce, Signature: Signature(tok.Value, nonce, ts, pageURL)}, nil
}

// Card signs req for appID with its current wx_card api_ticket.
func (s *Signer) Card(ctx context.Context, appID string, req CardRequest) (CardSigned, error) {
	values := []string{req.CardID, req.Code, req.OpenID, req.Balance, req.LocationID, req.CardType}
	for i, v := range values {
		if reason := cardValueProblem(v); reason != "" {
			return CardSigned{}, &CardFieldError{Field: cardFieldNames[i], Reason: reason}
		}
	}
	if req.ChooseCard {
		values = append(values, appID)
	}
	tok, now, err := s.live(ctx, appID, wechat.TicketWxCard)
	if err != nil {
		return CardSigned{}, err
	}
	ts, nonce := strconv.FormatInt(now.Unix(), 10), s.nonce()
	values = append(values, tok.Value, ts, nonce)
	return CardSigned{Timestamp: ts, NonceStr: nonce, Signature: CardSignature(values...), SignType: "SHA1"}, nil
}

// CardFieldError is a caller's card value Signer.Card refuses; it names
// the field, never the value.
type CardFieldError struct{ Field, Reason string }

func (e *CardFieldError) Error() string { return "jssdk: card field " + e.Field + " " + e.Reason }

var cardFieldNames = []string{"card_id", "code", "openid", "balance", "location_id", "card_type"}

func cardValueProblem(v string) string {
	if len(v) > MaxCardValueBytes {
		return fmt.Sprintf("is %d bytes, over the %d-byte limit", len(v), MaxCardValueBytes)
	}
	for i := 0; i < len(v); i++ {
		if b := v[i]; b <= 0x20 || b >= 0x7f {
			return fmt.Sprintf("has byte 0x%02x at offset %d: want printable ASCII without spaces", b, i)
		}
	}
	return ""
}

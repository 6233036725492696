package wechat

import (
	"errors"
	"strconv"
)

// Error classes. Every error this package returns matches at most one of
// the first four with errors.Is; callers decide what to do by class, never
// by errmsg.
var (
	// ErrTransient: try again later, with backoff and jitter (-1 system
	// busy, 45011 minute limit, 89501/89503 IP awaiting confirmation, network
	// failures, malformed replies).
	ErrTransient = errors.New("transient upstream failure")
	// ErrQuota: the app's daily fetch quota is used up (45009). Stop fetching
	// until Beijing midnight; keep serving the current token.
	ErrQuota = errors.New("daily quota exhausted")
	// ErrConfig: retrying cannot help until an operator fixes something
	// (wrong secret, bad appid, IP not whitelisted, account frozen, ...).
	ErrConfig = errors.New("configuration error")
	// ErrTokenInvalid: a business API refused the access token (40001,
	// 40014, 42001). Refresh only if that token is still the current one.
	ErrTokenInvalid = errors.New("access token no longer valid")
)

// Finer distinctions, orthogonal to the classes above.
var (
	// ErrMalformedReply: the upstream answered something that is not a
	// valid reply (bad status, not JSON, too large, bad token, bad
	// expires_in). It also matches ErrTransient.
	ErrMalformedReply = errors.New("malformed reply")
	// ErrOutcomeUnknown: the request was sent but no valid reply came back,
	// so a classic fetch may have minted a token (and so invalidated the
	// previous one) without our knowing it.
	ErrOutcomeUnknown = errors.New("request sent, outcome unknown")
)

// Endpoint paths. Classification depends on the endpoint: 40001 from a
// token endpoint is a wrong secret, from any other API a dead token.
const (
	EndpointToken       = "/cgi-bin/token"
	EndpointStableToken = "/cgi-bin/stable_token"
	// EndpointTicket is getticket: a business API (it takes an
	// access_token), so 40001 there means a dead access token.
	EndpointTicket = "/cgi-bin/ticket/getticket"
)

// Error is a non-zero errcode returned by WeChat. Its request was answered,
// so a classic fetch that returned an *Error minted nothing.
type Error struct {
	Code     int
	Message  string // errmsg, with any secret redacted
	Endpoint string // path of the API that returned it
}

func (e *Error) Error() string {
	s := "wechat: " + e.Endpoint + ": errcode " + strconv.Itoa(e.Code)
	if e.Message != "" {
		// Cleaned again: an *Error may be built by hand, not parsed.
		s += ": " + cleanMessage(e.Message, "")
	}
	if c := e.class(); c != nil {
		s += " (" + c.Error() + ")"
	}
	return s
}

// Is reports whether target is this error's class.
func (e *Error) Is(target error) bool {
	c := e.class()
	return c != nil && target == c
}

func (e *Error) class() error { return Classify(e.Endpoint, e.Code) }

// Classify returns the class (ErrTransient, ErrQuota, ErrConfig or
// ErrTokenInvalid) of errcode code returned by endpoint, or nil for 0.
//
// On the token endpoints an unknown code is ErrTransient: retried with
// backoff, never hammered, and still visible in metrics and logs. On a
// business API an unknown code is the caller's business (nil).
func Classify(endpoint string, code int) error {
	if code == 0 {
		return nil
	}
	if endpoint == EndpointToken || endpoint == EndpointStableToken {
		if c, ok := tokenEndpointClasses[code]; ok {
			return c
		}
		return ErrTransient
	}
	if endpoint == EndpointTicket {
		// A ticket cache backs off on a code it does not know, as a token
		// cache does, instead of treating it as nobody's business.
		if c, ok := ticketClasses[code]; ok {
			return c
		}
		if c, ok := businessClasses[code]; ok {
			return c
		}
		return ErrTransient
	}
	return businessClasses[code]
}

// ticketClasses are getticket's own codes, beyond the business ones.
var ticketClasses = map[int]error{
	40097: ErrConfig, // invalid args: a ticket type WeChat does not know
	48001: ErrConfig, // api unauthorized: the account may not use this ticket
}

// ClassifyBusiness is Classify for a business API (anything but the token
// endpoints): ErrTokenInvalid for 40001, 40014 and 42001.
func ClassifyBusiness(code int) error { return businessClasses[code] }

var tokenEndpointClasses = map[int]error{
	-1:    ErrTransient, // system busy
	45011: ErrTransient, // API minute limit: wait ~60 s
	89501: ErrTransient, // IP awaiting admin confirmation
	89503: ErrTransient, // IP awaiting admin confirmation
	45009: ErrQuota,     // daily limit
	40001: ErrConfig,    // from the token endpoint: wrong secret
	40002: ErrConfig,    // bad grant_type
	40013: ErrConfig,    // bad appid
	40125: ErrConfig,    // bad secret
	40164: ErrConfig,    // IP not whitelisted
	40243: ErrConfig,    // secret frozen
	41002: ErrConfig,    // appid missing
	41004: ErrConfig,    // secret missing
	43002: ErrConfig,    // must POST
	50004: ErrConfig,    // token API forbidden
	50007: ErrConfig,    // account frozen
	89506: ErrConfig,    // IP rejected for 24 h
	89507: ErrConfig,    // IP rejected for 1 h
}

var businessClasses = map[int]error{
	40001: ErrTokenInvalid, // from a business API: token superseded or bad
	40014: ErrTokenInvalid, // invalid access_token
	42001: ErrTokenInvalid, // access_token expired
	-1:    ErrTransient,
	45011: ErrTransient,
	45009: ErrQuota,
}

func quote(s string) string { return strconv.Quote(s) }

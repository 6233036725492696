package wechattest

import (
	"crypto/rand"
	"encoding/base64"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Stats counts what happened to one app. Stats("") is the total over all
// apps plus the calls that named no known app (unknown appid, a token
// this server never minted).
type Stats struct {
	Minted             int // tokens minted (classic, new stable tokens, force refreshes), lost replies included
	Refused            int // token-endpoint calls answered with an errcode (any, injected ones included)
	BusinessOK         int
	BusinessSuperseded int // business calls answered 40001: the token was replaced and its grace ended
	BusinessExpired    int // business calls answered 42001: the token was past its own expiry
	BusinessInvalid    int // business calls answered 40014: a token this server never minted
	QuotaUsed          int // classic calls that reached today's quota check (those refused with 45009 included)
	Checks             int // calls that only asked whether a token is live (wechat.CheckHeader): not business calls
	TicketsMinted      int // tickets minted (both kinds; TicketsMinted gives one kind), lost replies included
	TicketCalls        int // getticket calls answered with a ticket (a reused one included)
	SignaturesOK       int // signatures verified against a live ticket
	SignaturesDead     int // signatures made with a ticket that was no longer live: the failure to prevent
	SignaturesInvalid  int // signatures that match no ticket of the app
}

func (a Stats) add(b Stats) Stats {
	a.Minted += b.Minted
	a.Refused += b.Refused
	a.BusinessOK += b.BusinessOK
	a.BusinessSuperseded += b.BusinessSuperseded
	a.BusinessExpired += b.BusinessExpired
	a.BusinessInvalid += b.BusinessInvalid
	a.QuotaUsed += b.QuotaUsed
	a.Checks += b.Checks
	a.TicketsMinted += b.TicketsMinted
	a.TicketCalls += b.TicketCalls
	a.SignaturesOK += b.SignaturesOK
	a.SignaturesDead += b.SignaturesDead
	a.SignaturesInvalid += b.SignaturesInvalid
	return a
}

// TokenState is what a business API would say about a token right now.
type TokenState int

const (
	Unknown    TokenState = iota // never minted by this server (for that app): 40014
	Live                         // accepted, possibly inside its grace period
	Superseded                   // replaced and its grace period is over: 40001
	Expired                      // past its own expiry: 42001 (wins over Superseded)
)

func (t TokenState) String() string {
	switch t {
	case Live:
		return "live"
	case Superseded:
		return "superseded"
	case Expired:
		return "expired"
	}
	return "unknown"
}

// TokenInfo describes one minted token.
type TokenInfo struct {
	State     TokenState
	Stable    bool      // minted by /cgi-bin/stable_token
	IssuedAt  time.Time // by the server's clock
	ExpiresAt time.Time
	// GraceEndsAt is when a replaced token stops working; zero while the
	// token is not replaced (or, for a stable token replaced in its last
	// window, because it then works until ExpiresAt).
	GraceEndsAt time.Time
}

// lifetime is when a credential WeChat minted (a token, a ticket) works:
// from issuedAt until expiresAt, or until graceEndsAt once a newer one
// replaced it. One rule for both.
type lifetime struct {
	issuedAt    time.Time
	expiresAt   time.Time
	graceEndsAt time.Time
}

func (l *lifetime) state(now time.Time) TokenState {
	switch {
	case !now.Before(l.expiresAt):
		return Expired
	case !l.graceEndsAt.IsZero() && !now.Before(l.graceEndsAt):
		return Superseded
	}
	return Live
}

type tokenRecord struct {
	appID  string
	stable bool
	lifetime
}

type appState struct {
	secret     string
	classic    string // newest classic token
	stable     string // newest stable token
	quotaDay   string
	quotaUsed  int
	forceDay   string
	forceCount int
	lastForce  time.Time
	everForced bool
	stats      Stats
	tickets    map[string]*ticketKind // by kind
}

// tokenOf is the record of token if it was minted for appID; s.mu held.
func (s *Server) tokenOf(appID, token string) *tokenRecord {
	if t, ok := s.tokens[token]; ok && t.appID == appID {
		return t
	}
	return nil
}

// TokenState says what a business API would answer for token right now.
// A token of another app is Unknown.
func (s *Server) TokenState(appID, token string) TokenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokenOf(appID, token)
	if t == nil {
		return Unknown
	}
	return t.state(s.now())
}

// TokenInfo describes token; ok is false if this server never minted it
// for appID.
func (s *Server) TokenInfo(appID, token string) (info TokenInfo, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokenOf(appID, token)
	if t == nil {
		return TokenInfo{State: Unknown}, false
	}
	return TokenInfo{State: t.state(s.now()), Stable: t.stable, IssuedAt: t.issuedAt, ExpiresAt: t.expiresAt, GraceEndsAt: t.graceEndsAt}, true
}

// Revoke makes token dead at once (business APIs answer 40001), as a
// fetch outside the fleet followed by the end of its grace would, or as
// WeChat revoking it. It reports whether appID had minted token.
func (s *Server) Revoke(appID, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokenOf(appID, token)
	if t == nil {
		return false
	}
	t.graceEndsAt = s.now()
	return true
}

// CurrentToken is the newest classic token of appID ("" if none).
func (s *Server) CurrentToken(appID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		return a.classic
	}
	return ""
}

// CurrentStableToken is the newest stable token of appID ("" if none).
func (s *Server) CurrentStableToken(appID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		return a.stable
	}
	return ""
}

// Stats returns appID's counters; "" gives the server-wide total.
func (s *Server) Stats(appID string) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if appID != "" {
		a, ok := s.apps[appID]
		if !ok {
			return Stats{}
		}
		return a.snapshot(now)
	}
	total := s.unattributed
	for _, a := range s.apps {
		total = total.add(a.snapshot(now))
	}
	return total
}

func (a *appState) snapshot(now time.Time) Stats {
	st := a.stats
	st.QuotaUsed = 0
	if a.quotaDay == wechat.QuotaDay(now) {
		st.QuotaUsed = a.quotaUsed
	}
	return st
}

// chargeQuota counts one call against today's quota and reports whether
// it is within it. Must hold s.mu.
func (s *Server) chargeQuota(a *appState, now time.Time) bool {
	if day := wechat.QuotaDay(now); a.quotaDay != day {
		a.quotaDay, a.quotaUsed = day, 0
	}
	a.quotaUsed++
	return a.quotaUsed <= s.cfg.dailyQuota
}

// mint creates a token for appID. Must hold s.mu.
func (s *Server) mint(appID string, a *appState, stable bool, now time.Time) *tokenRecord {
	value := newTokenValue()
	t := &tokenRecord{appID: appID, stable: stable, lifetime: lifetime{issuedAt: now, expiresAt: now.Add(s.cfg.lifetime)}}
	s.tokens[value] = t
	a.stats.Minted++
	if stable {
		a.stable = value
	} else {
		a.classic = value
	}
	return t
}

// supersede starts the grace period of a replaced token. Must hold s.mu.
func (s *Server) supersede(value string, now time.Time) {
	if t, ok := s.tokens[value]; ok && t.graceEndsAt.IsZero() {
		t.graceEndsAt = now.Add(s.cfg.grace)
	}
}

// newTokenValue returns 128 URL-safe characters: real tokens are over 100
// characters of [A-Za-z0-9_-], and a client that stores them in a short
// column should find out here.
func newTokenValue() string {
	var b [96]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// expiresInSeconds rounds a remaining life up to whole seconds, at least
// 1, as expires_in must be a positive integer.
func expiresInSeconds(d time.Duration) int {
	secs := int((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return secs
}

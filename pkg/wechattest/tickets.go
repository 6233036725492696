package wechattest

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Ticket defaults. WeChat documents 7200 s; how long a replaced ticket
// keeps working is not documented, so the grace is the token's.
const (
	DefaultTicketLifetime = 7200 * time.Second
	DefaultTicketGrace    = 5 * time.Minute
)

// TicketRefetch is what getticket does when called again while the app's
// ticket of that kind is still valid. Reports differ; a cache must be
// correct under both.
type TicketRefetch int

const (
	// TicketReuse answers with the same ticket until it expires, and says
	// expires_in = the full lifetime every time, so the remaining life
	// cannot be read from a reply (the commonly reported behaviour).
	TicketReuse TicketRefetch = iota
	// TicketRotate mints a new ticket on every call; the previous one keeps
	// working for the ticket grace (WithTicketGrace), then signatures made
	// with it fail (the older reports).
	TicketRotate
	// TicketRenew answers with the same ticket and renews its life to the
	// full lifetime from that call (another reading of "expires_in is
	// always 7200").
	TicketRenew
)

func (m TicketRefetch) String() string {
	switch m {
	case TicketReuse:
		return "reuse"
	case TicketRotate:
		return "rotate"
	case TicketRenew:
		return "renew"
	}
	return "TicketRefetch(" + strconv.Itoa(int(m)) + ")"
}

type ticketConfig struct {
	refetch  TicketRefetch
	lifetime time.Duration
	grace    time.Duration
}

func (c ticketConfig) validate() error {
	switch {
	case c.refetch != TicketReuse && c.refetch != TicketRotate && c.refetch != TicketRenew:
		return fmt.Errorf("wechattest: WithTicketRefetch(%v): want TicketReuse, TicketRotate or TicketRenew", c.refetch)
	case c.lifetime <= 0:
		return fmt.Errorf("wechattest: WithTicketLifetime(%v): the lifetime must be positive", c.lifetime)
	case c.grace < 0:
		return fmt.Errorf("wechattest: WithTicketGrace(%v): the grace must not be negative", c.grace)
	}
	return nil
}

// WithTicketRefetch sets what a getticket call does while the current
// ticket is valid (default TicketReuse).
func WithTicketRefetch(m TicketRefetch) Option { return func(c *config) { c.tickets.refetch = m } }

// WithTicketLifetime sets the life of every ticket (default 7200 s);
// expires_in always says this whole lifetime.
func WithTicketLifetime(d time.Duration) Option { return func(c *config) { c.tickets.lifetime = d } }

// WithTicketGrace sets how long a ticket replaced under TicketRotate keeps
// working (default 5 min).
func WithTicketGrace(d time.Duration) Option { return func(c *config) { c.tickets.grace = d } }

type ticketRecord struct {
	appID, kind string
	lifetime
}

// ticketKind is one app's tickets of one kind.
type ticketKind struct {
	current string
	all     []string // every ticket minted, oldest first
	minted  int
}

func (a *appState) ticketKind(kind string) *ticketKind {
	if a.tickets == nil {
		a.tickets = map[string]*ticketKind{}
	}
	k := a.tickets[kind]
	if k == nil {
		k = &ticketKind{}
		a.tickets[kind] = k
	}
	return k
}

// handleTicket is GET /cgi-bin/ticket/getticket?access_token=&type=. It
// checks the access token like every business API (41001, 40014, 40001,
// 42001; 40097 for a bad type), then answers the app's ticket of that kind
// as the configured TicketRefetch says. Faults whose Endpoint is
// wechat.EndpointTicket apply to it (FaultEmptyToken answers an empty
// ticket); faults for the token endpoints never do.
func (s *Server) handleTicket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	typ := q.Get("type")
	appID, refused := s.business(q.Get("access_token"), typ == "jsapi" || typ == "wx_card")
	if refused != nil {
		writeReply(w, *refused)
		return
	}
	f := s.takeFault(pathTicket, appID)
	if f != nil && f.Kind == FaultEmptyToken {
		writeReply(w, jsonReply(map[string]any{"errcode": 0, "errmsg": "ok", "ticket": "", "expires_in": expiresInSeconds(s.cfg.tickets.lifetime)}))
		return
	}
	if !s.faultBefore(w, r, f, appID) {
		return
	}
	finish(w, s.ticket(appID, typ), f)
}

func (s *Server) ticket(appID, kind string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	a := s.apps[appID]
	k := a.ticketKind(kind)
	cur := s.tickets[k.current]
	if s.cfg.tickets.refetch == TicketRotate || cur == nil || cur.state(now) != Live {
		value := newTokenValue()[:86] // real tickets are 86 characters
		s.tickets[value] = &ticketRecord{appID: appID, kind: kind, lifetime: lifetime{issuedAt: now, expiresAt: now.Add(s.cfg.tickets.lifetime)}}
		if cur != nil && cur.graceEndsAt.IsZero() {
			cur.graceEndsAt = now.Add(s.cfg.tickets.grace)
		}
		k.current = value
		k.all = append(k.all, value)
		k.minted++
		a.stats.TicketsMinted++
	} else if s.cfg.tickets.refetch == TicketRenew {
		cur.expiresAt = now.Add(s.cfg.tickets.lifetime)
	}
	a.stats.TicketCalls++
	return jsonReply(map[string]any{
		"errcode":    0,
		"errmsg":     "ok",
		"ticket":     k.current,
		"expires_in": expiresInSeconds(s.cfg.tickets.lifetime), // always the full life, as WeChat says
	})
}

// TicketsMinted is how many tickets of kind appID has been given.
func (s *Server) TicketsMinted(appID, kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok && a.tickets[kind] != nil {
		return a.tickets[kind].minted
	}
	return 0
}

// CurrentTicket is the newest ticket of kind for appID ("" if none).
func (s *Server) CurrentTicket(appID, kind string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok && a.tickets[kind] != nil {
		return a.tickets[kind].current
	}
	return ""
}

// TicketState says whether ticket, of kind for appID, would verify a
// signature right now (Live), or why not.
func (s *Server) TicketState(appID, kind, ticket string) TokenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.ticketOf(appID, kind, ticket)
	if t == nil {
		return Unknown
	}
	return t.state(s.now())
}

// ticketOf is the record of ticket if it was minted for appID and kind;
// s.mu held.
func (s *Server) ticketOf(appID, kind, ticket string) *ticketRecord {
	if t, ok := s.tickets[ticket]; ok && t.appID == appID && t.kind == kind {
		return t
	}
	return nil
}

// RevokeTicket makes ticket dead at once, as a fetch outside the fleet
// under TicketRotate followed by the end of its grace would.
func (s *Server) RevokeTicket(appID, kind, ticket string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.ticketOf(appID, kind, ticket)
	if t == nil {
		return false
	}
	t.graceEndsAt = s.now()
	return true
}

// Signature verification errors.
var (
	// ErrInvalidSignature: the signature matches no ticket of the app.
	ErrInvalidSignature = errors.New("wechattest: invalid signature: it matches no ticket of the app")
	// ErrDeadTicketSignature: the signature was made with a ticket of the
	// app that is no longer live (expired, or replaced and past its grace).
	ErrDeadTicketSignature = errors.New("wechattest: invalid signature: made with a ticket that is no longer live")
)

// VerifyJSSDK checks a JS-SDK config signature the way wx.config does:
// against the app's jsapi tickets, at the fake's now. It recomputes the
// documented formula itself (it is the judge, so it shares no code with
// the signer it judges). It returns nil for a live ticket,
// ErrDeadTicketSignature for a ticket no longer live, ErrInvalidSignature
// otherwise, and counts the outcome in Stats.
func (s *Server) VerifyJSSDK(appID, pageURL, nonce string, timestamp int64, signature string) error {
	if i := strings.IndexByte(pageURL, '#'); i >= 0 {
		pageURL = pageURL[:i]
	}
	return s.verify(appID, "jsapi", signature, func(ticket string) string {
		return hexSHA1("jsapi_ticket=" + ticket + "&noncestr=" + nonce + "&timestamp=" + strconv.FormatInt(timestamp, 10) + "&url=" + pageURL)
	})
}

// VerifyCard checks a card signature (cardExt, cardSign) against the
// app's wx_card tickets: the SHA-1 of the sorted values, ticket included.
// Results as VerifyJSSDK.
func (s *Server) VerifyCard(appID, signature string, values ...string) error {
	return s.verify(appID, "wx_card", signature, func(ticket string) string {
		v := append([]string{ticket}, values...)
		sort.Strings(v)
		return hexSHA1(strings.Join(v, ""))
	})
}

func (s *Server) verify(appID, kind, signature string, sign func(ticket string) string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.apps[appID]
	if !ok {
		s.unattributed.SignaturesInvalid++
		return ErrInvalidSignature
	}
	now := s.now()
	if k := a.tickets[kind]; k != nil {
		for i := len(k.all) - 1; i >= 0; i-- {
			if sign(k.all[i]) != signature {
				continue
			}
			if s.tickets[k.all[i]].state(now) != Live {
				a.stats.SignaturesDead++
				return ErrDeadTicketSignature
			}
			a.stats.SignaturesOK++
			return nil
		}
	}
	a.stats.SignaturesInvalid++
	return ErrInvalidSignature
}

func hexSHA1(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// PathVerifyJSSDK is the fake's own business check for pages: GET with
// appid, url, noncestr, timestamp and signature answers errcode 0 when the
// signature verifies against a live jsapi ticket (VerifyJSSDK), 63002
// ("invalid signature") otherwise, with "ticket_dead": true when it was
// made with a ticket of the app that is no longer live. It is not a WeChat API: WeChat checks
// in the browser, at wx.config.
const PathVerifyJSSDK = "/tokenkeeper_test/verify_jssdk"

func (s *Server) handleVerifyJSSDK(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("timestamp"), 10, 64)
	if err != nil {
		writeReply(w, errReply(63002, "invalid signature"))
		return
	}
	switch err := s.VerifyJSSDK(q.Get("appid"), q.Get("url"), q.Get("noncestr"), ts, q.Get("signature")); {
	case err == nil:
		writeReply(w, jsonReply(map[string]any{"errcode": 0, "errmsg": "ok"}))
	case errors.Is(err, ErrDeadTicketSignature):
		writeReply(w, jsonReply(map[string]any{"errcode": 63002, "errmsg": "invalid signature (ticket no longer live) rid: " + newRID(), "ticket_dead": true}))
	default:
		writeReply(w, errReply(63002, "invalid signature"))
	}
}

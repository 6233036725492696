package tokencache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Tickets (jsapi_ticket, wx_card api_ticket) are one more kind of token: a
// ticket cache is a Cache of its own key prefix (TicketKeyPrefix) whose
// Source fetches getticket with the app's current access token, taken from
// the token cache. So a ticket has every guarantee of a token (Redis
// record whose TTL follows expires_in, near copy, one fetch per refresh for
// the whole fleet, fenced writes, refresh ahead of expiry, Redis down
// served from the near copy), by the same code.
//
// What the ticket source adds:
//   - A getticket answer of 40001/40014/42001 is about the access token it
//     was given: that exact token is reported to the token cache's
//     Invalidate (verified with WeChat, rate-limited fleet-wide) and the
//     call is retried once with the token that replaces it.
//   - WeChat may hand out the same ticket again within its validity, saying
//     expires_in 7200 every time. The fleet records in Redis when it first
//     saw each ticket (and when a getticket whose reply was lost was sent,
//     since that call may have minted the ticket seen next), and counts a
//     ticket's life from there, never from a later reply. A ticket within
//     the margin of its end is refused and fetching is held until just
//     after its end: WeChat will not issue the next one before. If WeChat
//     then still hands out the same ticket, it has renewed its life (no
//     mint we could have missed explains it), and the ticket is dated anew.
//   - Every ticket cache is Classic: a getticket may mint a new ticket that
//     kills the old one after the overlap, and the cache then caps as it
//     does for classic tokens. This assumes WeChat keeps a replaced ticket
//     working at least Config.Overlap (5 minutes by default), as it does a
//     replaced token; it is not documented.
//
// What is not offered: Invalidate. A ticket cannot be checked with WeChat,
// so a report could not be verified, and an unverified report would let any
// caller spend the small getticket quota. TicketCache has no Invalidate.

// TicketFetcher calls getticket; *wechat.Client is one.
type TicketFetcher interface {
	Ticket(ctx context.Context, accessToken, kind string) (wechat.Token, error)
}

// AccessTokens hands out an app's current access token and takes reports
// of a token WeChat refused; *Cache is one.
type AccessTokens interface {
	Token(ctx context.Context, appID string) (Token, error)
	Invalidate(ctx context.Context, appID, bad string) (Token, error)
}

// ErrUnknownTicketKind is returned for a kind other than wechat.TicketJSAPI
// and wechat.TicketWxCard.
var ErrUnknownTicketKind = errors.New("tokencache: unknown ticket kind")

// ErrTicketEnding means getticket returned a ticket the fleet first saw so
// long ago that less than the margin of it is left: WeChat gives out the
// next one only once it has expired. It matches wechat.ErrTransient.
var ErrTicketEnding = errors.New("tokencache: getticket returned a ticket at the end of its life")

// minTicketUsable is the least usable life worth storing a reused ticket
// for (a tenth of expires_in if that is less); below it, the fetch fails
// (ErrTicketEnding), and fetching is held until the ticket's end, when
// WeChat issues the next one.
const minTicketUsable = 10 * time.Second

// Tickets holds one ticket cache per kind. Build it with NewTickets; it is
// safe for concurrent use.
type Tickets struct {
	kinds map[string]*TicketCache
}

// TicketCache is the ticket cache of one kind: Ticket, Refresh and Peek
// are the Cache's Token, Refresh and Peek (a scheduler takes it like a
// token cache). It has no Invalidate (see Tickets).
type TicketCache struct {
	kind  string
	cache *Cache
}

// NewTickets builds the ticket caches of both kinds on client. Tickets are
// fetched through up with the access tokens of tokens (normally the
// process's *Cache). opts are a Cache's (WithConfig, WithHooks, ...); the
// key prefix each kind uses is TicketKeyPrefix(the configured prefix,
// kind), and every ticket cache is Classic whatever WithMode says.
func NewTickets(client redis.UniversalClient, tokens AccessTokens, up TicketFetcher, opts ...Option) (*Tickets, error) {
	if tokens == nil || up == nil {
		return nil, errors.New("tokencache: NewTickets: nil access tokens or ticket fetcher")
	}
	t := &Tickets{kinds: map[string]*TicketCache{}}
	for _, kind := range wechat.TicketKinds() {
		src := &ticketSource{kind: kind, tokens: tokens, up: up, client: client}
		kopts := append(append([]Option(nil), opts...), func(o *options) {
			o.KeyPrefix = TicketKeyPrefix(o.KeyPrefix, kind)
			o.modes = map[string]wechat.Mode{}
			o.kind = kind
			src.opt = o.Config
			src.now = o.now
			src.log = o.logger
		})
		c, err := New(client, src, kopts...)
		if err != nil {
			t.Close()
			return nil, err
		}
		if src.log == nil {
			src.log = c.log
		}
		t.kinds[kind] = &TicketCache{kind: kind, cache: c}
	}
	return t, nil
}

// Ticket returns a live ticket of kind ("jsapi" or "wx_card") for appID,
// with the guarantees of Cache.Token. Its Value is the ticket.
func (t *Tickets) Ticket(ctx context.Context, appID, kind string) (Token, error) {
	k, err := t.Kind(kind)
	if err != nil {
		return Token{}, err
	}
	return k.Ticket(ctx, appID)
}

// Kind returns the ticket cache of kind.
func (t *Tickets) Kind(kind string) (*TicketCache, error) {
	if k, ok := t.kinds[kind]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownTicketKind, wechat.TicketKindProblem(kind))
}

// Close closes every ticket cache.
func (t *Tickets) Close() error {
	var errs []error
	for _, k := range t.kinds {
		errs = append(errs, k.cache.Close())
	}
	return errors.Join(errs...)
}

// Kind is the ticket kind of this cache.
func (k *TicketCache) Kind() string { return k.kind }

// Ticket is Cache.Token for tickets.
func (k *TicketCache) Ticket(ctx context.Context, appID string) (Token, error) {
	return k.cache.Token(ctx, appID)
}

// Refresh is Cache.Refresh: the scheduler keeps tickets ahead of expiry
// with it.
func (k *TicketCache) Refresh(ctx context.Context, appID string) (Token, error) {
	return k.cache.Admin().Refresh(ctx, appID)
}

// Peek is Cache.Peek.
func (k *TicketCache) Peek(ctx context.Context, appID string) (Token, bool, error) {
	return k.cache.Admin().Peek(ctx, appID)
}

// Held is Cache.Held.
func (k *TicketCache) Held(appID string) (time.Time, error) { return k.cache.Admin().Held(appID) }

// FetchesToday is Cache.FetchesToday: getticket calls today, fleet-wide.
func (k *TicketCache) FetchesToday(ctx context.Context, appID string) (int64, error) {
	return k.cache.Admin().FetchesToday(ctx, appID)
}

// Stats is Cache.Stats.
func (k *TicketCache) Stats() Stats { return k.cache.Admin().Stats() }

// ticketSource is the Source of a ticket cache.
type ticketSource struct {
	kind   string
	tokens AccessTokens
	up     TicketFetcher
	client redis.UniversalClient
	opt    Config
	now    func() time.Time
	log    *slog.Logger
}

// Mode: every ticket cache is Classic, the mode with every precaution.
func (s *ticketSource) Mode(string) wechat.Mode { return wechat.Classic }

// Fetch gets a ticket with the app's current access token; if getticket
// says that token is dead, it reports exactly that token and retries once.
func (s *ticketSource) Fetch(ctx context.Context, appID string) (wechat.Token, error) {
	at, err := s.tokens.Token(ctx, appID)
	if err != nil {
		return wechat.Token{}, notSent(fmt.Errorf("no access token to fetch a %s ticket with: %w", s.kind, err))
	}
	tk, err := s.fetchOnce(ctx, appID, at.Value)
	if !errors.Is(err, wechat.ErrTokenInvalid) {
		return tk, err
	}
	s.log.Warn("tokencache: getticket refused the access token; reporting it and retrying once", "app", appID, "kind", s.kind,
		"token", wechat.Fingerprint(at.Value), "err", err)
	next, ierr := s.tokens.Invalidate(ctx, appID, at.Value)
	if ierr != nil {
		// The refusal was an answer: nothing was minted.
		return wechat.Token{}, notSent(fmt.Errorf("getticket refused access token %s, and no replacement came: %w", wechat.Fingerprint(at.Value), ierr))
	}
	return s.fetchOnce(ctx, appID, next.Value)
}

// notSent marks a failure before any getticket was sent (or one answered
// with a refusal), so the cache neither caps nor charges the budget.
func notSent(err error) error {
	return &wechat.RequestError{Endpoint: wechat.EndpointTicket, Sent: false, Err: err}
}

// fetchOnce is one getticket, with the fleet's record of when each ticket
// was first seen.
func (s *ticketSource) fetchOnce(ctx context.Context, appID, accessToken string) (wechat.Token, error) {
	k := appKeys(s.opt.KeyPrefix, appID)
	sentAt := s.now()
	// Registered before sending: if the reply is lost, the ticket it may
	// have minted is seen later, and its life counts from this send.
	if err := registerGetticket.run(ctx, s.client, []string{k.pending},
		registerArgs{Sent: sentAt.UnixMilli(), Stale: ticketLifeBound.Milliseconds(), TTL: wechat.MaxExpiresIn.Milliseconds()}).Err(); err != nil {
		return wechat.Token{}, notSent(fmt.Errorf("tokencache: register getticket: %w", err))
	}
	tk, err := s.up.Ticket(ctx, accessToken, s.kind)
	if err != nil {
		if !mayHaveMinted(err) {
			s.clearPending(k, sentAt)
		}
		return wechat.Token{}, err
	}
	repliedAt := s.now()
	slack := min(time.Second, tk.ExpiresIn/100) // expires_in is whole seconds
	res, err := seeTicket.run(ctx, s.client, []string{k.seen + tokenHash(tk.Value), k.pending},
		seeArgs{Sent: sentAt.UnixMilli(), Replied: repliedAt.UnixMilli(), Life: tk.ExpiresIn.Milliseconds(),
			Slack: slack.Milliseconds(), TTL: (tk.ExpiresIn + time.Hour).Milliseconds()}).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("seeTicket returned %d values, want 2", len(res))
	}
	if err != nil {
		// Without the record a reused ticket's age is unknown: not stored.
		return wechat.Token{}, &wechat.RequestError{Endpoint: wechat.EndpointTicket, Sent: true, Err: fmt.Errorf("tokencache: record ticket: %w", err)}
	}
	firstSeen, firstReply := time.UnixMilli(res[0]), time.UnixMilli(res[1])
	left := firstSeen.Add(tk.ExpiresIn).Sub(sentAt)
	usable := left - s.opt.Margin
	if usable < min(minTicketUsable, tk.ExpiresIn/10) {
		// Ask again once even a mint at its first reply would have
		// expired: WeChat then hands out the next ticket or, if it renewed
		// this one's life, this one again, which seeTicket dates anew.
		end := firstReply.Add(tk.ExpiresIn + 2*slack)
		return wechat.Token{}, &ticketEndingError{kind: s.kind, left: left, end: end}
	}
	if firstSeen.Before(sentAt) {
		s.log.Info("tokencache: getticket returned a ticket seen before; its life counts from then", "app", appID, "kind", s.kind,
			"ticket", wechat.Fingerprint(tk.Value), "first_seen", firstSeen, "left", left)
	}
	tk.ExpiresIn = ticketLife(left, s.opt.Margin)
	return tk, nil
}

// ticketLife is the expires_in to hand the cache for a ticket with left of
// its life: the cache's margin rule (Config.lifetimes clamps the margin to
// a fifth of expires_in) must still end its usable life a full margin
// before WeChat's end, however little is left.
func ticketLife(left, margin time.Duration) time.Duration {
	if left >= 5*margin {
		return left
	}
	return (left - margin) * 5 / 4
}

func (s *ticketSource) clearPending(k keys, sentAt time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = clearPending.run(ctx, s.client, []string{k.pending}, clearArgs{Sent: sentAt.UnixMilli()}).Err()
}

// ticketEndingError is ErrTicketEnding; the cache holds fetching until
// end, when WeChat issues the next ticket.
type ticketEndingError struct {
	kind string
	left time.Duration
	end  time.Time // just after the ticket expires, counted from its first sighting
}

func (e *ticketEndingError) Error() string {
	return fmt.Sprintf("%v: the %s ticket has %v left, under the margin; WeChat issues the next one when it expires", ErrTicketEnding, e.kind, e.left.Round(time.Millisecond))
}

func (e *ticketEndingError) Is(target error) bool {
	return target == ErrTicketEnding || target == wechat.ErrTransient
}

// newTicketScript is newScript without the record prelude: the ticket
// bookkeeping scripts touch no record.
func newTicketScript(body string) script {
	src := "local a = cjson.decode(ARGV[1])\n" + body
	return script{Script: redis.NewScript(src), src: src}
}

// seeArgs are seeTicket's arguments.
type seeArgs struct {
	Sent    int64 `json:"sent"`    // this getticket's send, ms
	Replied int64 `json:"replied"` // when its reply came, ms
	Life    int64 `json:"life"`    // expires_in, ms
	Slack   int64 `json:"slack"`   // expires_in's rounding, ms
	TTL     int64 `json:"ttl"`     // of the seen key, ms
}

// seeTicket records a ticket getticket returned and returns {first, reply}:
// the earliest it can have been minted (the send of its first sighting, or
// of an earlier getticket whose reply was lost, if that is within one life)
// and when its first sighting's reply came (it was minted by then). A
// ticket handed out again after even a mint at that reply would have
// expired has had its life renewed: it is dated anew. Either way a lost
// getticket is accounted for.
//
// KEYS: seen (of this ticket: "first reply"), pending
var seeTicket = newTicketScript(`
local first, reply = string.match(redis.call('GET', KEYS[1]) or '', '^(%d+) (%d+)$')
first, reply = tonumber(first), tonumber(reply)
local p = tonumber(redis.call('GET', KEYS[2]) or '')
if first and a.sent > reply + a.life + a.slack then first = nil end
if not first then
  first, reply = a.sent, a.replied
  if p and p < a.sent and p > a.sent - a.life then first = p end
  redis.call('SET', KEYS[1], string.format('%d %d', first, reply), 'PX', a.ttl)
end
if p and p <= a.sent then redis.call('DEL', KEYS[2]) end
return {first, reply}
`)

// ticketLifeBound is the longest a ticket lives (WeChat documents 7200
// s): a getticket whose reply was lost longer ago than this cannot have
// minted a ticket still handed out.
const ticketLifeBound = 2 * time.Hour

// registerArgs are registerGetticket's arguments.
type registerArgs struct {
	Sent  int64 `json:"sent"`
	Stale int64 `json:"stale"` // an older registration can explain no live ticket
	TTL   int64 `json:"ttl"`
}

// registerGetticket records a getticket about to be sent, unless an
// earlier one whose reply is unknown is registered and still matters (the
// earliest is what a ticket seen next may date from).
//
// KEYS: pending
var registerGetticket = newTicketScript(`
local p = tonumber(redis.call('GET', KEYS[1]) or '')
if not p or p < a.sent - a.stale then
  redis.call('SET', KEYS[1], string.format('%d', a.sent), 'PX', a.ttl)
end
return 0
`)

// clearArgs are clearPending's arguments.
type clearArgs struct {
	Sent int64 `json:"sent"`
}

// clearPending forgets a getticket known to have minted nothing, if it is
// the one registered.
//
// KEYS: pending
var clearPending = newTicketScript(`
if tonumber(redis.call('GET', KEYS[1]) or '') == a.sent then redis.call('DEL', KEYS[1]) end
return 0
`)

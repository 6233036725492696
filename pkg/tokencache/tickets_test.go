package tokencache_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

const ticketApp = "wxtickets"

// ticketFleet is n processes, each with its token cache and its ticket
// caches, on one Redis and one fake WeChat.
type ticketFleet struct {
	fake    *wechattest.Server
	tokens  []*tokencache.Cache
	tickets []*tokencache.Tickets
	fetcher *countingFetcher
}

// countingFetcher is the real client, counting the getticket calls each
// access token was used for.
type countingFetcher struct {
	inner *wechat.Client
	mu    sync.Mutex
	calls []string // fingerprints of the access tokens, in order
}

func (f *countingFetcher) Ticket(ctx context.Context, accessToken, kind string) (wechat.Token, error) {
	f.mu.Lock()
	f.calls = append(f.calls, wechat.Fingerprint(accessToken))
	f.mu.Unlock()
	return f.inner.Ticket(ctx, accessToken, kind)
}

func (f *countingFetcher) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newTicketFleet(t *testing.T, n int, newClient func() redis.UniversalClient, now func() time.Time,
	fakeOpts []wechattest.Option, cacheOpts []tokencache.Option) *ticketFleet {
	t.Helper()
	fakeOpts = append([]wechattest.Option{wechattest.WithApp(ticketApp, secret), wechattest.WithClock(now)}, fakeOpts...)
	f := &ticketFleet{fake: wechattest.New(t, fakeOpts...)}
	client := wechat.NewClient(wechat.WithBaseURL(f.fake.URL()), wechat.WithClock(now))
	src, err := wechat.NewSource(client, wechat.App{ID: ticketApp, Secret: secret, Mode: wechat.Classic})
	if err != nil {
		t.Fatal(err)
	}
	f.fetcher = &countingFetcher{inner: client}
	cacheOpts = append([]tokencache.Option{tokencache.WithClock(now)}, cacheOpts...)
	for range n {
		rdb := newClient()
		t.Cleanup(func() { _ = rdb.Close() })
		tc, err := tokencache.New(rdb, src, cacheOpts...)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := tokencache.NewTickets(rdb, tc, f.fetcher, cacheOpts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tk.Close(); _ = tc.Close() })
		f.tokens, f.tickets = append(f.tokens, tc), append(f.tickets, tk)
	}
	return f
}

// miniClock moves a test clock and miniredis's together.
type miniClock struct {
	mu  sync.Mutex
	now time.Time
	m   *miniredis.Miniredis
}

func (c *miniClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *miniClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	c.m.FastForward(d)
	c.m.SetTime(c.Now())
}

func newMiniFleet(t *testing.T, n int, fakeOpts ...wechattest.Option) (*ticketFleet, *miniClock) {
	t.Helper()
	m := miniredis.RunT(t)
	start := time.Date(2026, 11, 20, 4, 0, 0, 0, time.UTC)
	m.SetTime(start)
	clock := &miniClock{now: start, m: m}
	f := newTicketFleet(t, n, func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: m.Addr()}) }, clock.Now,
		fakeOpts, []tokencache.Option{tokencache.WithBackoff(time.Second, 8*time.Second)})
	return f, clock
}

// Cold start: many readers in several processes ask for both kinds at
// once; exactly one getticket per kind is sent for the whole fleet.
func TestTicketColdHerdOneFetchFleetWide(t *testing.T) {
	srv := redistest.Start(t)
	f := newTicketFleet(t, 4, func() redis.UniversalClient { return srv.Client() }, time.Now, nil, nil)
	var wg sync.WaitGroup
	var errs atomic.Int64
	got := make(map[string]map[string]bool) // kind → tickets handed out
	var mu sync.Mutex
	for _, tk := range f.tickets {
		for range 25 {
			for _, kind := range wechat.TicketKinds() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := tk.Ticket(context.Background(), ticketApp, kind)
					if err != nil {
						errs.Add(1)
						t.Log(err)
						return
					}
					mu.Lock()
					if got[kind] == nil {
						got[kind] = map[string]bool{}
					}
					got[kind][tok.Value] = true
					mu.Unlock()
				}()
			}
		}
	}
	wg.Wait()
	if errs.Load() != 0 {
		t.Fatalf("%d of 200 readers got an error", errs.Load())
	}
	st := f.fake.Stats(ticketApp)
	for _, kind := range wechat.TicketKinds() {
		if n := f.fake.TicketsMinted(ticketApp, kind); n != 1 || len(got[kind]) != 1 || !got[kind][f.fake.CurrentTicket(ticketApp, kind)] {
			t.Errorf("%s: %d minted, %d distinct handed out; want one, the current one", kind, n, len(got[kind]))
		}
	}
	if st.TicketCalls != 2 || len(f.fetcher.Calls()) != 2 {
		t.Errorf("getticket calls: fake saw %d, fetcher made %d; want 2 (one per kind) for 4 processes", st.TicketCalls, len(f.fetcher.Calls()))
	}
	if st.Minted != 1 {
		t.Errorf("access tokens minted: %d, want 1 (both ticket caches share the token cache)", st.Minted)
	}
	// The record is a token record under the ticket prefix, with a TTL.
	key := tokencache.RecordKey(tokencache.TicketKeyPrefix("tokenkeeper:", wechat.TicketJSAPI), ticketApp)
	rdb := srv.Client()
	defer rdb.Close()
	ttl, err := rdb.PTTL(context.Background(), key).Result()
	if err != nil || ttl <= 0 || ttl > 7200*time.Second {
		t.Errorf("ticket record %s: TTL %v (%v), want within expires_in", key, ttl, err)
	}
}

// getticket answers 40001: the access token it was given is reported,
// verified dead, replaced, and getticket is retried once with the new one.
func TestTicketDeadAccessTokenReportedAndRetriedOnce(t *testing.T) {
	f, _ := newMiniFleet(t, 2)
	ctx := context.Background()
	old, err := f.tokens[0].Token(ctx, ticketApp)
	if err != nil {
		t.Fatal(err)
	}
	f.fake.Revoke(ticketApp, old.Value) // killed outside the fleet
	tok, err := f.tickets[1].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if f.fake.TicketState(ticketApp, wechat.TicketJSAPI, tok.Value) != wechattest.Live {
		t.Error("the ticket handed out is not live")
	}
	cur, _ := f.tokens[0].Token(ctx, ticketApp)
	calls := f.fetcher.Calls()
	if len(calls) != 2 || calls[0] != wechat.Fingerprint(old.Value) || calls[1] != wechat.Fingerprint(cur.Value) || cur.Value == old.Value {
		t.Errorf("getticket calls with tokens %v; want the old token %s then its replacement %s", calls, wechat.Fingerprint(old.Value), wechat.Fingerprint(cur.Value))
	}
	st := f.fake.Stats(ticketApp)
	if st.Minted != 2 || st.BusinessSuperseded != 1 || st.Checks != 1 {
		t.Errorf("fake: %d tokens minted, %d getticket refused, %d checks; want 2, 1, 1 (the report verified, one fetch)", st.Minted, st.BusinessSuperseded, st.Checks)
	}
	if s := f.tokens[1].Admin().Stats(); s.KilledOutside != 1 {
		t.Errorf("token cache stats %+v: the report must go through the verified Invalidate", s)
	}
}

// scriptedTickets answers getticket from a list of errors, then tickets.
type scriptedTickets struct {
	mu    sync.Mutex
	errs  []error
	calls []string
}

func (s *scriptedTickets) Ticket(_ context.Context, accessToken, kind string) (wechat.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, accessToken)
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return wechat.Token{}, err
	}
	return wechat.Token{Value: "TICKET-" + kind, ExpiresIn: 2 * time.Hour, FetchedAt: time.Now()}, nil
}

// tokenStub is AccessTokens with a fixed sequence of tokens.
type tokenStub struct {
	mu       sync.Mutex
	current  string
	reported []string
}

func (s *tokenStub) Token(context.Context, string) (tokencache.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return tokencache.Token{Value: s.current, UsableUntil: time.Now().Add(time.Hour)}, nil
}

func (s *tokenStub) Invalidate(_ context.Context, _, bad string) (tokencache.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reported = append(s.reported, bad)
	if bad == s.current {
		s.current += "-next"
	}
	return tokencache.Token{Value: s.current, UsableUntil: time.Now().Add(time.Hour)}, nil
}

func TestTicketRetriesOnlyOnce(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	invalid := &wechat.Error{Code: 40001, Endpoint: wechat.EndpointTicket}
	up := &scriptedTickets{errs: []error{invalid, invalid}}
	tokens := &tokenStub{current: "AT1"}
	tk, err := tokencache.NewTickets(rdb, tokens, up)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	_, err = tk.Ticket(context.Background(), ticketApp, wechat.TicketWxCard)
	if !errors.Is(err, wechat.ErrTokenInvalid) {
		t.Fatalf("err = %v, want the second refusal", err)
	}
	if strings.Join(up.calls, ",") != "AT1,AT1-next" || strings.Join(tokens.reported, ",") != "AT1" {
		t.Errorf("getticket with %v, reported %v; want AT1 then AT1-next, and only AT1 reported", up.calls, tokens.reported)
	}
	if strings.Contains(err.Error(), "AT1") {
		t.Errorf("error %q holds an access token", err)
	}
	kc, _ := tk.Kind(wechat.TicketWxCard)
	if _, found, _ := kc.Peek(context.Background(), ticketApp); found {
		t.Error("a ticket was stored after two refusals")
	}
	if _, err := tk.Ticket(context.Background(), ticketApp, "card"); !errors.Is(err, tokencache.ErrUnknownTicketKind) {
		t.Errorf("unknown kind: %v", err)
	}
}

// An empty ticket is refused, never stored; the next fetch succeeds.
func TestTicketEmptyRefusedNotStored(t *testing.T) {
	f, clock := newMiniFleet(t, 1)
	ctx := context.Background()
	f.fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultEmptyToken, Endpoint: wechat.EndpointTicket})
	_, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if !errors.Is(err, wechat.ErrMalformedReply) || !strings.Contains(err.Error(), "ticket is empty") {
		t.Fatalf("err = %v, want a malformed reply saying the ticket is empty", err)
	}
	k, _ := f.tickets[0].Kind(wechat.TicketJSAPI)
	if _, found, err := k.Peek(ctx, ticketApp); found || err != nil {
		t.Fatalf("after an empty ticket: found %v, err %v; want nothing stored", found, err)
	}
	// Held for the backoff, then fetched.
	if until, cause := k.Held(ticketApp); until.IsZero() || cause == nil {
		t.Error("fetching is not held after a malformed reply")
	}
	clock.Advance(2 * time.Second)
	tok, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if err != nil || tok.Value != f.fake.CurrentTicket(ticketApp, wechat.TicketJSAPI) {
		t.Fatalf("after the backoff: %v, %v; want the fake's ticket", tok, err)
	}
}

// Redis goes away: the ticket is served from the near copy, and no
// getticket is sent.
func TestTicketRedisDownServedFromNearCopy(t *testing.T) {
	srv := redistest.Start(t)
	f := newTicketFleet(t, 1, func() redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	}, time.Now, nil, nil)
	ctx := context.Background()
	want, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.StopKeepingData(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Resume() }()
	k, _ := f.tickets[0].Kind(wechat.TicketJSAPI)
	for range 50 {
		got, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
		if err != nil || got.Value != want.Value {
			t.Fatalf("Redis down: %v, %v; want the near copy", got, err)
		}
	}
	if _, _, err := k.Peek(ctx, ticketApp); err == nil {
		t.Fatal("Redis answered: the outage did not happen")
	}
	// A cold kind cannot be fetched without Redis (the fetch needs the lock).
	if _, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketWxCard); !errors.Is(err, tokencache.ErrUnavailable) {
		t.Errorf("cold kind with Redis down: %v, want ErrUnavailable", err)
	}
	if n := f.fake.Stats(ticketApp).TicketCalls; n != 1 {
		t.Errorf("getticket calls: %d, want 1 (none during the outage)", n)
	}
}

// A reused ticket's life counts from when the fleet first saw it, not from
// the later reply that said expires_in 7200 again.
func TestTicketReusedKeepsItsFirstLife(t *testing.T) {
	f, clock := newMiniFleet(t, 2, wechattest.WithTicketRefetch(wechattest.TicketReuse))
	ctx := context.Background()
	first, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(115 * time.Minute) // due (refresh ahead 5 min), still usable
	k, _ := f.tickets[1].Kind(wechat.TicketJSAPI)
	again, err := k.Refresh(ctx, ticketApp)
	if err != nil {
		t.Fatal(err)
	}
	if again.Value != first.Value || f.fake.Stats(ticketApp).TicketCalls != 2 {
		t.Fatalf("the refresh got another ticket (or sent no getticket): same %v", again.Value == first.Value)
	}
	if !again.UsableUntil.Equal(first.UsableUntil) {
		t.Errorf("usable until %v after the reused reply, want %v (first sighting + 7200 s - margin)", again.UsableUntil, first.UsableUntil)
	}
	// Near its end, within the margin: refused, not stored with a new life.
	clock.Advance(first.UsableUntil.Sub(clock.Now()) - 5*time.Second)
	if _, err := k.Refresh(ctx, ticketApp); !errors.Is(err, tokencache.ErrTicketEnding) {
		t.Errorf("refresh 5 s before the usable end: %v, want ErrTicketEnding", err)
	}
	// Held until WeChat's end of the ticket, not retried on a backoff
	// that only gets the same ticket again.
	if until, cause := k.Held(ticketApp); !until.Equal(first.ExpiresAt.Add(2*time.Second)) || !errors.Is(cause, tokencache.ErrTicketEnding) {
		t.Errorf("held until %v (%v), want just after the ticket's end %v (+2 s)", until, cause, first.ExpiresAt)
	}
	calls := f.fake.Stats(ticketApp).TicketCalls
	if _, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI); err != nil {
		t.Errorf("the stored ticket must still be served until its usable end: %v", err)
	}
	clock.Advance(30 * time.Second)
	if _, err := k.Refresh(ctx, ticketApp); err == nil || f.fake.Stats(ticketApp).TicketCalls != calls {
		t.Errorf("refresh while held: %v, %d getticket calls more; want held, none", err, f.fake.Stats(ticketApp).TicketCalls-calls)
	}
	// Once WeChat's ticket expired, the next one comes.
	clock.Advance(2 * time.Minute)
	next, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if err != nil || next.Value == first.Value {
		t.Fatalf("after expiry: %v, %v; want a new ticket", next, err)
	}
}

// Readers sign pages under every re-fetch behaviour while tickets rotate;
// the fake verifies every signature: none is made with a dead ticket.
func TestTicketNoDeadSignatureUnderEveryRefetchBehaviour(t *testing.T) {
	for _, mode := range []wechattest.TicketRefetch{wechattest.TicketReuse, wechattest.TicketRotate, wechattest.TicketRenew} {
		t.Run(mode.String(), func(t *testing.T) {
			srv := redistest.Start(t)
			f := newTicketFleet(t, 3, func() redis.UniversalClient {
				return redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
			}, time.Now, []wechattest.Option{
				wechattest.WithLifetime(time.Hour), wechattest.WithTicketRefetch(mode),
				wechattest.WithTicketLifetime(lifetime), wechattest.WithTicketGrace(grace),
			}, cacheOptions())
			var ok, okPastFirst, failed atomic.Int64
			var wg sync.WaitGroup
			began := time.Now()
			deadline := began.Add(4 * time.Second)
			for _, tk := range f.tickets {
				signer, err := jssdk.NewSigner(tk)
				if err != nil {
					t.Fatal(err)
				}
				for g := range 5 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						page := "https://example.com/page/" + string(rune('a'+g)) + "#x"
						for time.Now().Before(deadline) {
							cfg, err := signer.Config(context.Background(), ticketApp, page)
							if err != nil {
								failed.Add(1)
							} else if err := f.fake.VerifyJSSDK(ticketApp, page, cfg.NonceStr, cfg.Timestamp, cfg.Signature); err == nil {
								ok.Add(1)
								if time.Since(began) > lifetime+500*time.Millisecond {
									okPastFirst.Add(1) // the first ticket's life is over by now
								}
							}
							time.Sleep(20 * time.Millisecond) // pacing of a page load, not synchronisation
						}
					}()
				}
			}
			wg.Wait()
			st := f.fake.Stats(ticketApp)
			t.Logf("%v: %d verified, %d not signed (no live ticket), %d tickets minted, %d getticket calls", mode, ok.Load(), failed.Load(), st.TicketsMinted, st.TicketCalls)
			if st.SignaturesDead != 0 || st.SignaturesInvalid != 0 {
				t.Errorf("%d signatures made with a dead ticket, %d matching none; want 0", st.SignaturesDead, st.SignaturesInvalid)
			}
			if okPastFirst.Load() == 0 || (mode != wechattest.TicketRenew && st.TicketsMinted < 2) {
				t.Errorf("%d tickets minted, %d verified after the first one's life: the run did not cross a ticket's end", st.TicketsMinted, okPastFirst.Load())
			}
		})
	}
}

// A getticket whose reply was lost may have minted the ticket the next
// one returns (reused): its life counts from the lost call's send.
func TestTicketLostReplyDatesTheNextTicket(t *testing.T) {
	f, clock := newMiniFleet(t, 1, wechattest.WithTicketRefetch(wechattest.TicketReuse))
	ctx := context.Background()
	if _, err := f.tokens[0].Token(ctx, ticketApp); err != nil {
		t.Fatal(err)
	}
	lostAt := clock.Now()
	f.fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply, Endpoint: wechat.EndpointTicket})
	if _, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI); !errors.Is(err, wechat.ErrOutcomeUnknown) {
		t.Fatalf("lost reply: %v, want outcome unknown", err)
	}
	if f.fake.TicketsMinted(ticketApp, wechat.TicketJSAPI) != 1 {
		t.Fatal("the lost call minted no ticket")
	}
	clock.Advance(30 * time.Minute)
	tok, err := f.tickets[0].Ticket(ctx, ticketApp, wechat.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if want := lostAt.Add(7200*time.Second - time.Minute); !tok.UsableUntil.Equal(want) {
		t.Errorf("usable until %v, want %v: the lost call's send + 7200 s - margin", tok.UsableUntil, want)
	}
}

// The ticket source logs access tokens and tickets by fingerprint only.
func TestTicketLogsHoldNoCredential(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	var logs strings.Builder
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) })
	up := &scriptedTickets{errs: []error{&wechat.Error{Code: 40001, Endpoint: wechat.EndpointTicket}}}
	tokens := &tokenStub{current: "ACCESS-TOKEN-VALUE-1"}
	tk, err := tokencache.NewTickets(rdb, tokens, up, tokencache.WithLogger(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	got, err := tk.Ticket(context.Background(), ticketApp, wechat.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), wechat.Fingerprint("ACCESS-TOKEN-VALUE-1")) {
		t.Errorf("the refused token is not named by its fingerprint:\n%s", logs.String())
	}
	for _, secret := range []string{"ACCESS-TOKEN-VALUE-1", got.Value} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs hold %q:\n%s", secret, logs.String())
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// If WeChat renews a reused ticket's life (expires_in 7200 from each
// call), the cache stops serving it at the end counted from its first
// sighting, then takes it back, dated anew, once no mint it could have
// missed can explain it: a short gap, not an outage until the sighting is
// forgotten.
func TestTicketRenewedIsTakenBack(t *testing.T) {
	f, clock := newMiniFleet(t, 1, wechattest.WithTicketRefetch(wechattest.TicketRenew))
	ctx := context.Background()
	k, _ := f.tickets[0].Kind(wechat.TicketJSAPI)
	first, err := k.Ticket(ctx, ticketApp)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(first.UsableUntil.Sub(clock.Now()) - 5*time.Second)
	if _, err := k.Refresh(ctx, ticketApp); !errors.Is(err, tokencache.ErrTicketEnding) {
		t.Fatalf("near the end counted from the first sighting: %v, want ErrTicketEnding", err)
	}
	until, _ := k.Held(ticketApp)
	clock.Advance(until.Sub(clock.Now()))
	again, err := k.Ticket(ctx, ticketApp)
	if err != nil {
		t.Fatalf("once the hold is over: %v", err)
	}
	if again.Value != first.Value || !again.UsableUntil.Equal(clock.Now().Add(7200*time.Second-time.Minute)) {
		t.Errorf("got %v (same %v), want the renewed ticket with a full life from now", again, again.Value == first.Value)
	}
	if gap := until.Sub(first.UsableUntil); gap > time.Minute+3*time.Second {
		t.Errorf("no ticket for %v, want at most the margin and a few seconds", gap)
	}
	if f.fake.TicketState(ticketApp, wechat.TicketJSAPI, again.Value) != wechattest.Live {
		t.Error("the renewed ticket is not live")
	}
}

// BenchmarkTicketHit: a ticket read from the near copy, next to a token
// read from the near copy in the same run (the baseline): the ticket path
// adds one map lookup.
func BenchmarkTicketHit(b *testing.B) {
	m := miniredis.RunT(b)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	fake := wechattest.New(b, wechattest.WithApp(ticketApp, secret))
	client := wechat.NewClient(wechat.WithBaseURL(fake.URL()))
	src, err := wechat.NewSource(client, wechat.App{ID: ticketApp, Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	tc, err := tokencache.New(rdb, src)
	if err != nil {
		b.Fatal(err)
	}
	defer tc.Close()
	tk, err := tokencache.NewTickets(rdb, tc, client)
	if err != nil {
		b.Fatal(err)
	}
	defer tk.Close()
	ctx := context.Background()
	if _, err := tk.Ticket(ctx, ticketApp, wechat.TicketJSAPI); err != nil {
		b.Fatal(err)
	}
	b.Run("token-baseline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tc.Token(ctx, ticketApp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ticket", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tk.Ticket(ctx, ticketApp, wechat.TicketJSAPI); err != nil {
				b.Fatal(err)
			}
		}
	})
}

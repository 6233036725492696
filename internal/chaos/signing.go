package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Page signing: every reader also signs JS-SDK configs with the jsapi
// tickets of a ticket cache on its token cache, and has the upstream
// verify each one against its ticket state. A signature made with a ticket
// that is no longer live is what page users see as "invalid signature":
// the target is 0 under every fault.

// ticketOptions make the upstream's tickets live as long as its tokens and
// rotate on every getticket (the reading that can kill a ticket the cache
// still holds), a replaced ticket working for the token grace.
func ticketOptions(lifetime, grace time.Duration) []wechattest.Option {
	return []wechattest.Option{wechattest.WithTicketLifetime(lifetime), wechattest.WithTicketGrace(grace),
		wechattest.WithTicketRefetch(wechattest.TicketRotate)}
}

// SignatureCounts are the pages a reader signed and what the upstream's
// check said of them.
type SignatureCounts struct {
	OK        int64            `json:"ok"`
	Dead      int64            `json:"dead"`       // made with a ticket no longer live: the failure to prevent
	Invalid   int64            `json:"invalid"`    // matching no ticket of the app at all
	Late      int64            `json:"late"`       // checked more than the margin after signing (a frozen reader): not judged
	NotSigned map[string]int64 `json:"not_signed"` // no live ticket at that moment, by cause: availability, not safety
	Unchecked int64            `json:"unchecked"`  // the check itself failed
	DeadAt    []string         `json:"dead_at,omitempty"`
}

func (a SignatureCounts) add(b SignatureCounts) SignatureCounts {
	a.OK += b.OK
	a.Dead += b.Dead
	a.Invalid += b.Invalid
	a.Late += b.Late
	a.Unchecked += b.Unchecked
	a.NotSigned = addCounts(a.NotSigned, b.NotSigned)
	a.DeadAt = append(a.DeadAt, b.DeadAt...)
	return a
}

func (a SignatureCounts) String() string {
	return fmt.Sprintf("pages signed: ok %d, dead-ticket signatures %d (target 0), matching no ticket %d, checked late %d, unchecked %d; not signed (no live ticket) %v",
		a.OK, a.Dead, a.Invalid, a.Late, a.Unchecked, a.NotSigned)
}

// violations are what the report must flag.
func (a SignatureCounts) violations() []string {
	var v []string
	if a.Dead > 0 {
		v = append(v, fmt.Sprintf("%d page(s) signed with a dead jsapi ticket: %v", a.Dead, a.DeadAt))
	}
	if a.Invalid > 0 {
		v = append(v, fmt.Sprintf("%d page signature(s) matching no ticket of the app", a.Invalid))
	}
	if a.OK == 0 {
		v = append(v, "no page signature verified: the signing readers did not really run")
	}
	return v
}

type pageSigner struct {
	tickets *tokencache.Tickets
	signer  *jssdk.Signer
	hc      *http.Client
	verify  string // the upstream's check URL
	margin  time.Duration
	log     *slog.Logger

	mu sync.Mutex
	c  SignatureCounts
}

func newPageSigner(rdb *redis.Client, cache *tokencache.Cache, hc *http.Client, rc ReaderConfig, log *slog.Logger) (*pageSigner, error) {
	up := wechat.NewClient(wechat.WithBaseURL(rc.UpstreamURL), wechat.WithHTTPClient(hc))
	tickets, err := tokencache.NewTickets(rdb, cache, up, rc.Cache.options(rc.KeyPrefix, rc.Grace,
		tokencache.WithBackoff(200*time.Millisecond, 2*time.Second), tokencache.WithLogger(log))...)
	if err != nil {
		return nil, err
	}
	signer, err := jssdk.NewSigner(tickets)
	if err != nil {
		tickets.Close()
		return nil, err
	}
	return &pageSigner{tickets: tickets, signer: signer, hc: hc, verify: rc.UpstreamURL + wechattest.PathVerifyJSSDK,
		margin: rc.Cache.Margin, log: log, c: SignatureCounts{NotSigned: map[string]int64{}}}, nil
}

func (p *pageSigner) close() { p.tickets.Close() }

func (p *pageSigner) counts() SignatureCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.c
	c.NotSigned = addCounts(nil, p.c.NotSigned)
	c.DeadAt = append([]string(nil), p.c.DeadAt...)
	return c
}

// run signs one page every interval (with jitter), bounded by ctx and
// maxIter.
func (p *pageSigner) run(ctx context.Context, apps []string, interval time.Duration, maxIter int) {
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	for i := 0; i < maxIter && ctx.Err() == nil; i++ {
		p.signOne(ctx, apps[rng.IntN(len(apps))], i)
		t := time.NewTimer(interval/2 + time.Duration(rng.Int64N(int64(interval))))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

func (p *pageSigner) signOne(ctx context.Context, app string, i int) {
	page := "https://m.example.com/chaos/" + strconv.Itoa(i%50) + "?app=" + app + "#section"
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cfg, err := p.signer.Config(cctx, app, page)
	signedAt := time.Now()
	if ctx.Err() != nil {
		return // cut short by the shutdown: proves nothing
	}
	if err != nil {
		p.mu.Lock()
		p.c.NotSigned[errKind(err)]++
		p.mu.Unlock()
		return
	}
	q := url.Values{"appid": {app}, "url": {page}, "noncestr": {cfg.NonceStr},
		"timestamp": {strconv.FormatInt(cfg.Timestamp, 10)}, "signature": {cfg.Signature}}
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, p.verify+"?"+q.Encode(), nil)
	checkAt := time.Now()
	resp, err := p.hc.Do(req)
	var ans struct {
		Errcode int  `json:"errcode"`
		Dead    bool `json:"ticket_dead"`
	}
	if err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		err = json.Unmarshal(body, &ans)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		p.c.Unchecked++
	case checkAt.Sub(signedAt) > p.margin && ans.Errcode != 0:
		p.c.Late++ // the reader was frozen between signing and checking
	case ans.Errcode == 0:
		p.c.OK++
	case ans.Dead:
		p.c.Dead++
		if len(p.c.DeadAt) < 100 {
			p.c.DeadAt = append(p.c.DeadAt, fmt.Sprintf("%s app %s at %s", page, app, signedAt.UTC().Format("15:04:05.000")))
		}
		p.log.Warn("chaos reader: a page was signed with a dead ticket", "app", app, "signed_at", signedAt)
	default:
		p.c.Invalid++
	}
}

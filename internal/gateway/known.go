package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Ledger shares the tokens a gateway handed out with the other replicas.
// It holds the SHA-256 of each token (hex), never the token. RedisLedger
// is one.
type Ledger interface {
	// Record says the token of hash was handed out for appID and is
	// honoured until until.
	Record(ctx context.Context, hash, appID string, until time.Time) error
	// Find returns what Record stored for hash; found is false if nothing
	// (or it expired).
	Find(ctx context.Context, hash string) (appID string, until time.Time, found bool, err error)
}

// ledgerTimeout bounds one Ledger call: while Redis is slow or down, a
// token is handed out without being shared, and an unknown one refused,
// rather than the caller waiting on Redis's own timeouts.
const ledgerTimeout = 500 * time.Millisecond

// known is the bounded map of the tokens this gateway honours: SHA-256 of
// the token → app and honour time. Lookups of tokens it handed out never
// leave the process; others are asked of the Ledger once and remembered.
type known struct {
	mu     sync.RWMutex
	m      map[[sha256.Size]byte]knownEntry
	max    int
	grace  time.Duration
	ledger Ledger
	log    *slog.Logger
}

type knownEntry struct {
	app    string
	until  time.Time
	shared bool // in the Ledger, until until
}

func newKnown(max int, grace time.Duration, ledger Ledger, log *slog.Logger) *known {
	return &known{m: make(map[[sha256.Size]byte]knownEntry), max: max, grace: grace, ledger: ledger, log: log}
}

// remember records tok as handed out for app, honoured until its usable end
// plus the grace. A token not yet in the Ledger until then is written there
// first, so another replica knows it by the time the caller can use it.
func (k *known) remember(ctx context.Context, app string, tok tokencache.Token, now time.Time) {
	h := tokenHash(tok.Value)
	until := tok.UsableUntil.Add(k.grace)
	if !k.put(h, knownEntry{app: app, until: until, shared: k.ledger == nil}, now) {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
	defer cancel()
	if err := k.ledger.Record(lctx, hex.EncodeToString(h[:]), app, until); err != nil {
		// The caller still gets its token, and this replica honours it;
		// another replica that does not find it answers 40001 and the SDK
		// fetches again there. The next hand-out tries again.
		k.log.Warn("gateway: could not share a handed-out token with the other replicas", "app", app,
			"token", wechat.Fingerprint(tok.Value), "err", err)
		return
	}
	k.mu.Lock()
	if e, ok := k.m[h]; ok && e.app == app && !e.until.After(until) {
		e.shared = true
		k.m[h] = e
	}
	k.mu.Unlock()
}

// put stores e, keeping the longer honour time of an entry already there;
// it reports whether e still has to be shared (new, honoured longer than
// what was shared, or never shared).
func (k *known) put(h [sha256.Size]byte, e knownEntry, now time.Time) (share bool) {
	// Most hand-outs are of a token already known: a read lock suffices.
	k.mu.RLock()
	old, ok := k.m[h]
	k.mu.RUnlock()
	if ok && old.app == e.app && !old.until.Before(e.until) && old.shared {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if old, ok := k.m[h]; ok && old.app == e.app {
		if !old.until.Before(e.until) {
			return !old.shared
		}
	} else if len(k.m) >= k.max {
		k.evictLocked(now)
	}
	k.m[h] = e
	return !e.shared
}

// evictLocked makes room: expired entries first; if none, an eighth of the
// map at random (Go's map order), which the Ledger can give back.
func (k *known) evictLocked(now time.Time) {
	for h, e := range k.m {
		if !now.Before(e.until) {
			delete(k.m, h)
		}
	}
	if len(k.m) < k.max {
		return
	}
	n := max(1, k.max/8)
	for h := range k.m {
		delete(k.m, h)
		if n--; n == 0 {
			return
		}
	}
}

// lookup returns the app value was handed out for, if it is still
// honoured at now.
func (k *known) lookup(ctx context.Context, value string, now time.Time) (string, bool, error) {
	h := tokenHash(value)
	k.mu.RLock()
	e, ok := k.m[h]
	k.mu.RUnlock()
	if ok {
		return e.app, now.Before(e.until), nil
	}
	if k.ledger == nil {
		return "", false, nil
	}
	lctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
	defer cancel()
	app, until, found, err := k.ledger.Find(lctx, hex.EncodeToString(h[:]))
	if err != nil || !found {
		return "", false, err
	}
	k.put(h, knownEntry{app: app, until: until, shared: true}, now)
	return app, now.Before(until), nil
}

// tokenHash is the SHA-256 of a token. One of up to 512 bytes (the room
// WeChat asks to reserve for a token) is copied to the stack for hashing:
// []byte(value) would copy it to the heap on every request.
func tokenHash(value string) [sha256.Size]byte {
	var buf [512]byte
	if len(value) <= len(buf) {
		return sha256.Sum256(append(buf[:0], value...))
	}
	return sha256.Sum256([]byte(value))
}

// RedisLedger is a Ledger in Redis: one key per token, named by
// tokencache.GatewayTokenKey under the cache's key prefix, holding
// "<appid>|<until Unix ms>" and expiring at until.
func RedisLedger(client redis.UniversalClient, prefix string) Ledger {
	return &redisLedger{client: client, prefix: prefix}
}

type redisLedger struct {
	client redis.UniversalClient
	prefix string
}

func (l *redisLedger) Record(ctx context.Context, hash, appID string, until time.Time) error {
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil
	}
	return l.client.Set(ctx, tokencache.GatewayTokenKey(l.prefix, hash), appID+"|"+strconv.FormatInt(until.UnixMilli(), 10), ttl).Err()
}

func (l *redisLedger) Find(ctx context.Context, hash string) (string, time.Time, bool, error) {
	s, err := l.client.Get(ctx, tokencache.GatewayTokenKey(l.prefix, hash)).Result()
	if errors.Is(err, redis.Nil) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	app, ms, ok := strings.Cut(s, "|")
	n, perr := strconv.ParseInt(ms, 10, 64)
	if !ok || perr != nil || tokencache.AppIDProblem(app) != "" {
		return "", time.Time{}, false, errors.New("gateway: corrupt ledger entry")
	}
	return app, time.UnixMilli(n), true, nil
}

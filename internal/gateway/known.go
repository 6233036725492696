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
// It holds the SHA-256 of each handed-out token (hex), never a token.
// RedisLedger is one.
type Ledger interface {
	// Record says the token of hash was handed out as e.
	Record(ctx context.Context, hash string, e HandedOut) error
	// Find returns what Record stored for hash; found is false if nothing
	// (or it expired).
	Find(ctx context.Context, hash string) (e HandedOut, found bool, err error)
}

// HandedOut is what a gateway knows of a token it handed out: for which
// app, to which credential (by name), which of the app's WeChat tokens it
// stood for (its wechat.Fingerprint), and until when it is honoured.
type HandedOut struct {
	App        string
	Credential string
	StoodFor   string
	Until      time.Time
}

// ledgerTimeout bounds one Ledger call: while Redis is slow or down, a
// token is handed out without being shared, and an unknown one refused,
// rather than the caller waiting on Redis's own timeouts.
const ledgerTimeout = 500 * time.Millisecond

// known is the bounded map of the tokens this gateway honours: SHA-256 of
// the token → what it was handed out as. Lookups of tokens it handed out
// never leave the process; others are asked of the Ledger once and
// remembered.
type known struct {
	mu     sync.RWMutex
	m      map[[sha256.Size]byte]knownEntry
	max    int
	grace  time.Duration
	ledger Ledger
	log    *slog.Logger
}

type knownEntry struct {
	HandedOut
	shared bool // in the Ledger, until Until
}

func newKnown(max int, grace time.Duration, ledger Ledger, log *slog.Logger) *known {
	return &known{m: make(map[[sha256.Size]byte]knownEntry), max: max, grace: grace, ledger: ledger, log: log}
}

// remember records handle as handed out to cred for app's token tok,
// honoured until the token's usable end plus the grace. A handle not yet in
// the Ledger until then is written there first, so another replica knows it
// by the time the caller can use it.
func (k *known) remember(ctx context.Context, app, cred, handle string, tok tokencache.Token, now time.Time) {
	h := tokenHash(handle)
	e := HandedOut{App: app, Credential: cred, StoodFor: wechat.Fingerprint(tok.Value), Until: tok.UsableUntil.Add(k.grace)}
	if !k.put(h, knownEntry{HandedOut: e, shared: k.ledger == nil}, now) {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
	defer cancel()
	if err := k.ledger.Record(lctx, hex.EncodeToString(h[:]), e); err != nil {
		// The caller still gets its token, and this replica honours it;
		// another replica that does not find it answers 40001 and the SDK
		// fetches again there. The next hand-out tries again.
		k.log.Warn("gateway: could not share a handed-out token with the other replicas", "app", app,
			"token", wechat.Fingerprint(handle), "err", err)
		return
	}
	k.mu.Lock()
	if old, ok := k.m[h]; ok && old.App == app && !old.Until.After(e.Until) {
		old.shared = true
		k.m[h] = old
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
	if ok && old.App == e.App && !old.Until.Before(e.Until) && old.shared {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if old, ok := k.m[h]; ok && old.App == e.App {
		if !old.Until.Before(e.Until) {
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
		if !now.Before(e.Until) {
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

// lookup returns what value was handed out as, if it is still honoured
// at now.
func (k *known) lookup(ctx context.Context, value string, now time.Time) (HandedOut, bool, error) {
	h := tokenHash(value)
	k.mu.RLock()
	e, ok := k.m[h]
	k.mu.RUnlock()
	if ok {
		return e.HandedOut, now.Before(e.Until), nil
	}
	if k.ledger == nil {
		return HandedOut{}, false, nil
	}
	lctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
	defer cancel()
	found, ok, err := k.ledger.Find(lctx, hex.EncodeToString(h[:]))
	if err != nil || !ok {
		return HandedOut{}, false, err
	}
	k.put(h, knownEntry{HandedOut: found, shared: true}, now)
	return found, now.Before(found.Until), nil
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

// RedisLedger is a Ledger in Redis: one key per handed-out token, named by
// tokencache.GatewayTokenKey under the cache's key prefix, holding
// "<appid>|<until Unix ms>|<fingerprint>|<credential name>" and expiring at
// until.
func RedisLedger(client redis.UniversalClient, prefix string) Ledger {
	return &redisLedger{client: client, prefix: prefix}
}

type redisLedger struct {
	client redis.UniversalClient
	prefix string
}

func (l *redisLedger) Record(ctx context.Context, hash string, e HandedOut) error {
	ttl := time.Until(e.Until)
	if ttl <= 0 {
		return nil
	}
	v := e.App + "|" + strconv.FormatInt(e.Until.UnixMilli(), 10) + "|" + e.StoodFor + "|" + e.Credential
	return l.client.Set(ctx, tokencache.GatewayTokenKey(l.prefix, hash), v, ttl).Err()
}

// errCorruptLedger: an entry that is not Record's layout (an older
// release's, or written by something else). The token is not honoured;
// the SDK fetches a new one.
var errCorruptLedger = errors.New("gateway: corrupt ledger entry")

func (l *redisLedger) Find(ctx context.Context, hash string) (HandedOut, bool, error) {
	s, err := l.client.Get(ctx, tokencache.GatewayTokenKey(l.prefix, hash)).Result()
	if errors.Is(err, redis.Nil) {
		return HandedOut{}, false, nil
	}
	if err != nil {
		return HandedOut{}, false, err
	}
	f := strings.SplitN(s, "|", 4)
	if len(f) != 4 || tokencache.AppIDProblem(f[0]) != "" || f[2] == "" || f[3] == "" {
		return HandedOut{}, false, errCorruptLedger
	}
	ms, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return HandedOut{}, false, errCorruptLedger
	}
	return HandedOut{App: f[0], Until: time.UnixMilli(ms), StoodFor: f[2], Credential: f[3]}, true, nil
}

package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Verifier is a Source that can ask WeChat whether it still accepts a token,
// with a call that mints nothing. *wechat.Source is one. Invalidate uses it
// so that a report costs a fetch only when the token is really dead; with a
// Source that is not a Verifier, every report of the current token is
// believed.
type Verifier interface {
	// Verify returns nil if WeChat accepts token, an error matching
	// wechat.ErrTokenInvalid if it refuses it, and any other error if it
	// could not tell.
	Verify(ctx context.Context, appID, token string) error
}

type verdict string

const (
	verdictAlive   verdict = "alive"
	verdictDead    verdict = "dead"
	verdictUnknown verdict = "" // WeChat could not tell: treated as dead, within the passive-refresh limits
)

// verdictAliveTTL is how long the fleet trusts "WeChat accepts it": a
// hostile caller reporting live tokens costs at most one check a second per
// app, and a token killed right after its check is replaced a second later.
const verdictAliveTTL = time.Second

// verify asks WeChat, once per token for the whole fleet, whether it still
// accepts tok. The verdict is shared in Redis under the token's hash, never
// the token itself.
func (c *Cache) verify(ctx context.Context, st *appState, tok string) verdict {
	v, ok := c.src.(Verifier)
	if !ok {
		return verdictUnknown
	}
	key := st.keys.verdicts + tokenHash(tok)
	if got, err := c.client.Get(ctx, key).Result(); err == nil && (got == string(verdictAlive) || got == string(verdictDead)) {
		return verdict(got)
	} else if err != nil && !errors.Is(err, redis.Nil) {
		c.log.Warn("tokencache: reading a token's verdict failed; asking WeChat", "app", st.id, "err", err)
	}
	r, _, _ := c.flight.Do(st.id+"\x00verify\x00"+tok, func() (any, error) {
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opt.FetchTimeout)
		defer cancel()
		err := v.Verify(vctx, st.id, tok)
		switch {
		case err == nil:
			_ = c.client.Set(vctx, key, string(verdictAlive), verdictAliveTTL).Err()
			return verdictAlive, nil
		case errors.Is(err, wechat.ErrTokenInvalid):
			_ = c.client.Set(vctx, key, string(verdictDead), 2*time.Hour).Err()
			return verdictDead, nil
		}
		c.log.Warn("tokencache: could not verify a reported token; treating it as dead", "app", st.id,
			"token", wechat.Fingerprint(tok), "err", err)
		return verdictUnknown, nil
	})
	return r.(verdict)
}

// judge is verify, acted on: unless WeChat still accepts tok, the caller's
// word stands (dead, or WeChat could not tell) and this process never hands
// tok out again.
func (c *Cache) judge(ctx context.Context, st *appState, tok string) verdict {
	v := c.verify(ctx, st, tok)
	if v != verdictAlive {
		st.near.kill(tok)
	}
	return v
}

// tokenHash names a token in Redis keys without revealing it.
func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:12])
}

package tokencache

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Peeked is one app's answer from PeekMany: what Peek would have returned.
type Peeked struct {
	AppID string
	Token Token
	Found bool
	// Err is the app's own error (an invalid appid, a corrupt record) or
	// its batch's (Redis did not answer).
	Err error
}

// PeekBatch is how many records PeekMany asks for in one pipeline: large
// enough that 100,000 apps cost 200 round trips, small enough that one
// batch's replies (about 200 B each) stay far below go-redis's buffers and
// Redis's client output limits.
const PeekBatch = 500

// PeekMany reads the records of many apps from Redis, PeekBatch at a time
// in one pipeline of GETs each (with a Cluster client go-redis splits each
// pipeline by node: every app's keys live in its own slot, so MGET cannot
// span apps), and never fetches. Like Peek, every record read refreshes
// this process's in-memory copy. The answers are in appIDs' order. A new
// leader reads a warm Redis with it in seconds where one GET per app costs
// a round trip each.
func (a Admin) PeekMany(ctx context.Context, appIDs []string) []Peeked {
	c := a.c
	out := make([]Peeked, len(appIDs))
	sts := make([]*appState, 0, PeekBatch)
	idx := make([]int, 0, PeekBatch)
	for from := 0; from < len(appIDs); from += PeekBatch {
		sts, idx = sts[:0], idx[:0]
		for i := from; i < min(from+PeekBatch, len(appIDs)); i++ {
			out[i].AppID = appIDs[i]
			st, err := c.app(appIDs[i])
			if err != nil {
				out[i].Err = err
				continue
			}
			sts, idx = append(sts, st), append(idx, i)
		}
		if len(sts) > 0 {
			c.peekBatch(ctx, sts, idx, out)
		}
	}
	return out
}

// peekBatch reads sts' records in one pipeline and writes each answer to
// out[idx[i]]. A record whose read raced an announcement (the near copy
// refused it) is read again on its own, as read does.
func (c *Cache) peekBatch(ctx context.Context, sts []*appState, idx []int, out []Peeked) {
	gens := make([]uint64, len(sts))
	for i, st := range sts {
		gens[i] = st.near.generation()
	}
	sentAt := c.opt.now()
	pipe := c.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(sts))
	for i, st := range sts {
		cmds[i] = pipe.Get(ctx, st.keys.record)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, st := range sts {
		o := &out[idx[i]]
		o.Token, o.Found, o.Err = c.adoptRead(ctx, st, cmds[i], gens[i], sentAt)
	}
}

// adoptRead is adoptAnswer for a GET sent in a pipeline; a GET that raced
// an announcement is read again on its own.
func (c *Cache) adoptRead(ctx context.Context, st *appState, cmd *redis.StringCmd, gen uint64, sentAt time.Time) (Token, bool, error) {
	tok, found, raced, err := c.adoptAnswer(st, cmd, gen, sentAt)
	if raced {
		return c.read(ctx, st)
	}
	return tok, found, err
}

package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// pipelineCounter counts the pipelines of GETs a go-redis client sends,
// and their GETs.
type pipelineCounter struct{ pipelines, gets atomic.Int64 }

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		gets := 0
		for _, cmd := range cmds {
			if cmd.Name() == "get" {
				gets++
			}
		}
		if gets > 0 {
			c.pipelines.Add(1)
			c.gets.Add(int64(gets))
		}
		return next(ctx, cmds)
	}
}

// TestPeekMany: every app's answer is what Peek would say (found, not
// found, corrupt, invalid appid), in the order asked; a record read in the
// batch becomes the process's near copy (the next Token sends nothing);
// and nothing is fetched.
func TestPeekMany(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, b := mustToken(t, f.cache, "wxa"), mustToken(t, f.cache, "wxb")
	if err := f.m.Set("tokenkeeper:{wxc}:token", "tk2|garbage"); err != nil {
		t.Fatal(err)
	}
	c2 := f.newCache(t)
	waitFor(t, "the second cache's subscription", func() bool { return c2.Admin().Stats().SubscriptionGaps > 0 })
	calls := f.src.Calls()

	got := c2.Admin().PeekMany(ctx, []string{"wxa", "bad id!", "wxb", "wxc", "wxd"})
	if len(got) != 5 {
		t.Fatalf("%d answers, want 5", len(got))
	}
	for i, want := range []struct {
		app   string
		value string
		found bool
		err   error
	}{{"wxa", a.Value, true, nil}, {"bad id!", "", false, ErrInvalidAppID}, {"wxb", b.Value, true, nil},
		{"wxc", "", false, ErrCorruptRecord}, {"wxd", "", false, nil}} {
		p := got[i]
		if p.AppID != want.app || p.Token.Value != want.value || p.Found != want.found || !errors.Is(p.Err, want.err) || (want.err == nil) != (p.Err == nil) {
			t.Errorf("answer %d = {%s %s found:%v err:%v}, want {%s %s found:%v err:%v}", i, p.AppID, p.Token, p.Found, p.Err, want.app, want.value, want.found, want.err)
		}
	}
	if f.src.Calls() != calls {
		t.Fatalf("PeekMany fetched %d times", f.src.Calls()-calls)
	}
	before := f.cmds.n.Load()
	if tok := mustToken(t, c2, "wxa"); tok.Value != a.Value {
		t.Fatalf("Token after PeekMany = %s, want %s", tok, a)
	}
	if n := f.cmds.n.Load() - before; n != 0 {
		t.Fatalf("Token after PeekMany sent %d commands; the batch's read should be the near copy", n)
	}
}

// TestPeekManyBatches: n apps cost ceil(n/PeekBatch) pipelines of one GET
// per app, not a round trip each.
func TestPeekManyBatches(t *testing.T) {
	f := newFixture(t)
	pipes := &pipelineCounter{}
	f.rdb.AddHook(pipes)
	apps := make([]string, 2*PeekBatch+7)
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%06d", i)
	}
	for _, p := range f.cache.Admin().PeekMany(context.Background(), apps) {
		if p.Found || p.Err != nil {
			t.Fatalf("%s: found %v, err %v; want nothing stored", p.AppID, p.Found, p.Err)
		}
	}
	if n := pipes.gets.Load(); n != int64(len(apps)) {
		t.Fatalf("%d GETs for %d apps, want one each", n, len(apps))
	}
	if n := pipes.pipelines.Load(); n != 3 {
		t.Fatalf("%d pipelines for %d apps, want 3", n, len(apps))
	}
}

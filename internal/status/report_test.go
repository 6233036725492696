package status

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func TestReportWrite(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	tok := tokencache.Token{Value: "ACCESS-TOKEN-VALUE-0123456789", Version: 12, UsableUntil: now.Add(90*time.Minute + 1500*time.Millisecond)}
	rep := Report{Leader: "r2", Apps: []App{
		{ID: "wx1", Mode: wechat.Classic, Token: tok, HasToken: true,
			LastFetch: Record{Result: "ok", At: now.Add(-95 * time.Second), By: "r2"}, HasLastFetch: true, FetchesToday: 3},
		{ID: "wx2", Mode: wechat.Stable, TokenErr: errors.New("tokencache: corrupt record"),
			LastFetch: Record{Result: "transient", At: now.Add(-2 * time.Second), By: "r1", Error: "wechat: errcode -1 system busy"}, HasLastFetch: true,
			FetchesErr: errors.New("redis down")},
		{ID: "wx3", Mode: wechat.Classic, LastFetchErr: errors.New(`p:{wx3}:last_fetch: corrupt last_fetch record "x"`)},
	}}
	var b bytes.Buffer
	if err := rep.Write(&b, now); err != nil {
		t.Fatal(err)
	}
	want := "leader: r2\n\n" +
		"APP  MODE     TOKEN                              VERSION  USABLE FOR  LAST FETCH                                                FETCHES TODAY\n" +
		"wx1  classic  " + wechat.Fingerprint(tok.Value) + "                           12       1h30m1s     ok 1m35s ago by r2                                        3\n" +
		"wx2  stable   error: tokencache: corrupt record  -        -           transient 2s ago by r1: wechat: errcode -1 system busy    -\n" +
		"wx3  classic  -                                  -        -           error: p:{wx3}:last_fetch: corrupt last_fetch record \"x\"  0\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	if strings.Contains(b.String(), tok.Value) {
		t.Error("the report shows a whole token")
	}

	b.Reset()
	if err := (Report{}).Write(&b, now); err != nil || !strings.HasPrefix(b.String(), "leader: (none: no replica holds the lease)\n\n") {
		t.Errorf("no leader: %q %v", b.String(), err)
	}
}

func TestGather(t *testing.T) {
	r := fleet.NewRefresher(t, []wechattest.Option{wechattest.WithApp("wx1", "status-secret-1"), wechattest.WithApp("wx2", "status-secret-2"), wechattest.WithApp("wx3", "status-secret-3")}, `
apps:
  - {id: wx1, secret: status-secret-1}
  - {id: wx2, secret: status-secret-2, mode: stable}
  - {id: wx3, secret: status-secret-3}
cache: {key_prefix: "st:"}
lease: {name: "st:leader"}
`)
	mr, cfg := r.Mini, r.Config
	cache, client, err := backend.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	rep, err := Gather(ctx, cfg, client, cache)
	if err != nil || rep.Leader != "" || len(rep.Apps) != 3 || rep.Apps[0].HasToken || rep.Apps[0].HasLastFetch {
		t.Fatalf("empty Redis: %+v %v", rep, err)
	}

	tok, err := cache.Token(ctx, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mr.Set("st:{wx1}:last_fetch", string(Record{Result: "ok", At: at, By: "r7"}.Encode()))
	mr.Set("st:{wx3}:last_fetch", `{"result":"ok","at":`)
	mr.Set("st:leader", "r7/abcdef")

	rep, err = Gather(ctx, cfg, client, cache)
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, a3 := rep.Apps[0], rep.Apps[1], rep.Apps[2]
	if rep.Leader != "r7" {
		t.Errorf("leader %q, want r7", rep.Leader)
	}
	if !a1.HasToken || a1.Token.Value != tok.Value || a1.FetchesToday != 1 || !a1.HasLastFetch || a1.LastFetch != (Record{Result: "ok", At: at, By: "r7"}) {
		t.Errorf("wx1: %+v", a1)
	}
	if a2.HasToken || a2.HasLastFetch || a2.Mode != wechat.Stable || a2.FetchesToday != 0 {
		t.Errorf("wx2: %+v", a2)
	}
	if !errors.Is(a3.LastFetchErr, ErrCorruptRecord) || !strings.HasPrefix(a3.LastFetchErr.Error(), `st:{wx3}:last_fetch: corrupt last_fetch record "{\"result\":\"ok\",\"at\":": unexpected end of JSON input`) {
		t.Errorf("wx3 corrupt record: %v", a3.LastFetchErr)
	}

	addr := mr.Addr()
	mr.Close()
	if _, err := Gather(ctx, cfg, client, cache); err == nil || !strings.Contains(err.Error(), "redis "+addr+" unreachable") {
		t.Errorf("Redis down: %v", err)
	}
}

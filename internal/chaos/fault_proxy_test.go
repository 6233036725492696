package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// TestRedisProxyCutsOneClient drives a real go-redis client through the
// proxy: it relays, refuses, black-holes, heals, and silences then drops
// only the pub/sub connection, which go-redis resubscribes.
func TestRedisProxyCutsOneClient(t *testing.T) {
	srv := redistest.Start(t)
	p, err := startProxy("test", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer direct.Close()
	viaProxy := redis.NewClient(&redis.Options{Addr: p.addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer viaProxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := viaProxy.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET through the proxy: %v", err)
	}
	sub := viaProxy.Subscribe(ctx, "chan")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe through the proxy: %v", err)
	}
	msgs := sub.Channel()
	if !waitFor(2*time.Second, func() bool { return p.pubsubConns() == 1 }) {
		t.Fatalf("pub/sub connections seen: %d, want 1", p.pubsubConns())
	}
	received := func(want string) bool {
		timeout := time.After(500 * time.Millisecond)
		for {
			select {
			case m := <-msgs:
				if m.Payload == want {
					return true
				}
			case <-timeout:
				return false
			}
		}
	}
	direct.Publish(ctx, "chan", "wxa 1 2 3")
	if !received("wxa 1 2 3") {
		t.Fatal("a message did not come through the proxy")
	}

	// Silence: the message is swallowed, and counted, while commands
	// still work.
	before := p.counters()
	p.silencePubSub("wxa")
	direct.Publish(ctx, "chan", "wxa 2 3 4")
	if received("wxa 2 3 4") {
		t.Fatal("a message came through a silenced pub/sub connection")
	}
	if err := viaProxy.Get(ctx, "k").Err(); err != nil {
		t.Fatalf("GET while pub/sub is silenced: %v", err)
	}
	if d := p.counters().sub(before); d.MutedMsgs != 1 || d.MutedApp != 1 {
		t.Fatalf("muted %d messages, %d for the app; want 1 and 1", d.MutedMsgs, d.MutedApp)
	}
	if n := p.dropPubSub(); n != 1 {
		t.Fatalf("dropped %d pub/sub connections, want 1", n)
	}
	if !waitFor(5*time.Second, func() bool { return p.counters().sub(before).Subscribes >= 1 }) {
		t.Fatal("go-redis did not resubscribe after its pub/sub connection was dropped")
	}
	// Resubscribed: messages flow again (retry: the SUBSCRIBE may still be
	// on its way).
	if !waitFor(3*time.Second, func() bool { direct.Publish(ctx, "chan", "wxa 3 4 5"); return received("wxa 3 4 5") }) {
		t.Fatal("no message after the resubscription")
	}

	for _, mode := range []proxyMode{proxyRefuse, proxyBlackhole} {
		before := p.counters()
		p.cut(mode)
		if err := viaProxy.Get(ctx, "k").Err(); err == nil {
			t.Fatalf("%v: GET through a cut proxy succeeded", mode)
		}
		if err := direct.Get(ctx, "k").Err(); err != nil {
			t.Fatalf("%v: the direct client was cut too: %v", mode, err)
		}
		d := p.counters().sub(before)
		switch mode {
		case proxyRefuse:
			if d.Cut == 0 && d.Refused == 0 {
				t.Fatalf("refuse: nothing cut or refused: %+v", d)
			}
		case proxyBlackhole:
			if d.BlackHoled == 0 || d.Swallowed == 0 {
				t.Fatalf("black hole: nothing swallowed: %+v", d)
			}
		}
		p.heal()
		if !waitFor(3*time.Second, func() bool { return viaProxy.Get(ctx, "k").Err() == nil }) {
			t.Fatalf("%v: GET still failing after heal", mode)
		}
	}
}

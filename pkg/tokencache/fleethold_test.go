package tokencache

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// A configuration error holds the app fleet-wide: a second process does
// not send its own failing fetch, one fetch per ConfigHold for the whole
// fleet, and LiftHold (a reload) ends it at once.
func TestConfigErrorHoldIsFleetWide(t *testing.T) {
	f := newFixture(t)
	other := f.newCache(t) // another process on the same Redis
	f.src.QueueErr(&wechat.Error{Code: 40164, Endpoint: wechat.EndpointToken, Message: "invalid ip 203.0.113.7"})
	if _, err := f.cache.Token(context.Background(), "wx1"); !errors.Is(err, wechat.ErrConfig) {
		t.Fatalf("first fetch: %v, want ErrConfig", err)
	}
	end := strconv.FormatInt(f.clock.Now().Add(5*time.Minute).UnixMilli(), 10) // the hold's end, on the writer's clock
	if v, err := f.m.Get("tokenkeeper:{wx1}:hold"); err != nil || !strings.HasPrefix(v, end+"|40164|/cgi-bin/token|") {
		t.Fatalf("hold key = %q (%v)", v, err)
	}
	_, err := other.Token(context.Background(), "wx1")
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, wechat.ErrConfig) || wechat.ClassName(err) != "config" {
		t.Fatalf("other process: %v, want a HeldError wrapping the configuration error", err)
	}
	if !strings.Contains(err.Error(), "40164") {
		t.Errorf("the held error does not say what WeChat said: %v", err)
	}
	if n := f.src.Calls(); n != 1 {
		t.Fatalf("%d upstream fetches, want 1 for the fleet", n)
	}

	// After ConfigHold, one process tries again.
	f.clock.Advance(5*time.Minute + time.Second)
	f.src.QueueErr(&wechat.Error{Code: 40164, Endpoint: wechat.EndpointToken})
	_, _ = other.Token(context.Background(), "wx1")
	_, err = f.cache.Token(context.Background(), "wx1")
	if !errors.As(err, &held) || f.src.Calls() != 2 {
		t.Fatalf("after the hold: %d fetches (want 2), err %v", f.src.Calls(), err)
	}

	// A reload lifts it: the next fetch goes out at once.
	if err := f.cache.LiftHold(context.Background(), "wx1"); err != nil {
		t.Fatal(err)
	}
	if tok := mustToken(t, f.cache, "wx1"); tok.Value == "" || f.src.Calls() != 3 {
		t.Fatalf("after LiftHold: token %v, %d fetches", tok, f.src.Calls())
	}
	if f.m.Exists("tokenkeeper:{wx1}:hold") {
		t.Error("the hold key outlived LiftHold")
	}
}

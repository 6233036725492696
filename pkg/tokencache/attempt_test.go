package tokencache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Defects of one fetch attempt's life: begin, send, commit or abort.

// A fetch that was never sent cannot have minted anything: it must neither
// cap the token that keeps the app running nor be charged to the budget.
func TestNeverSentFetchNeitherCapsNorCharges(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"request not sent", &wechat.RequestError{Endpoint: wechat.EndpointToken, Sent: false, Err: errBoom}},
		{"configuration error", &wechat.ConfigError{AppID: "wx1", Reason: "empty secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tok := mustToken(t, f.cache, "wx1")
			f.src.QueueErr(tc.err)
			if _, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value); err == nil {
				t.Fatal("the failed fetch returned no error")
			}
			rec, _ := f.record(t, "wx1")
			if !rec.UsableUntil.Equal(tok.UsableUntil) {
				t.Fatalf("the stored token is usable until %v after a fetch that was never sent, want %v (uncapped)", rec.UsableUntil, tok.UsableUntil)
			}
			if n, _ := f.cache.Admin().FetchesToday(context.Background(), "wx1"); n != 1 {
				t.Fatalf("FetchesToday = %d, want 1: a fetch never sent is not charged", n)
			}
		})
	}
}

// A holder whose fetch fails stores nothing and so announces nothing; the
// processes waiting for it must be woken, not sleep out the lock.
func TestHolderFailureWakesTheWaiters(t *testing.T) {
	f := newFixture(t, WithLockTTL(time.Minute), WithFetchTimeout(30*time.Second))
	other := f.newCache(t, WithLockTTL(time.Minute), WithFetchTimeout(30*time.Second))
	tok := mustToken(t, f.cache, "wx1")
	f.src.QueueErr(errBoom)
	release := f.stallFetch("wx1", tok.Value) // A holds the lock; its fetch will fail
	done := make(chan error, 1)
	go func() {
		_, err := other.Invalidate(context.Background(), "wx1", tok.Value)
		done <- err
	}()
	waitFor(t, "B to wait for A", func() bool { return other.Admin().Stats().LockWaits > 0 })
	if err := release(); err == nil {
		t.Fatal("A's fetch did not fail")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("B after A's failure: %v", err)
		}
	case <-time.After(20 * time.Second): // the lock has 60 s left
		t.Fatal("B was not woken by A's failure: it sleeps out the lock")
	}
}

// Redis failing while a process waits for another holder is an outage, not
// a raw error: the Redis-down path answers.
func TestRedisFailingWhileWaitingIsAnOutage(t *testing.T) {
	f := newFixture(t, WithLockTTL(time.Minute), WithFetchTimeout(30*time.Second))
	other := f.newCache(t, WithLockTTL(time.Minute), WithFetchTimeout(30*time.Second))
	tok := mustToken(t, f.cache, "wx1")
	release := f.stallFetch("wx1", tok.Value)
	defer func() { f.m.SetError(""); _ = release() }()
	done := make(chan error, 1)
	go func() {
		_, err := other.Invalidate(context.Background(), "wx1", tok.Value)
		done <- err
	}()
	waitFor(t, "B to wait for A", func() bool { return other.Admin().Stats().LockWaits > 0 })
	f.m.SetError("ERR simulated outage")
	f.m.Publish(EventsChannel("tokenkeeper:"), wakeMessage("wx1")) // B looks again, and Redis fails
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("B: %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("B never returned")
	}
}

// A due refresh during which the stored record reaches its TTL is stored:
// nobody else stored anything, so it must not be refused and fetched again.
func TestRefreshWhoseRecordExpiresMeanwhileMintsOnce(t *testing.T) {
	f := newFixture(t)
	tok := mustToken(t, f.cache, "wx1")
	f.clock.Advance(tok.RefreshAt.Sub(f.clock.Now()))
	hold := f.holdFetches()
	done := make(chan error, 1)
	go func() {
		_, err := f.cache.Admin().Refresh(context.Background(), "wx1")
		done <- err
	}()
	<-f.src.started
	f.clock.Advance(tok.UsableUntil.Sub(f.clock.Now()) + time.Second) // the record expires
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := f.src.Calls(); n != 2 {
		t.Fatalf("upstream fetches = %d, want 2 (the first token and one refresh)", n)
	}
	if rec, _ := f.record(t, "wx1"); rec.Value != "tok-2" {
		t.Fatalf("record %v, want the refresh's token", rec)
	}
}

// When the commit's outcome is unknown, the fetched token is the newest
// WeChat knows of: this process keeps it as its last good copy.
func TestCommitFailureKeepsTheFetchedTokenInMemory(t *testing.T) {
	f := newFixture(t)
	hold := f.holdFetches()
	done := make(chan error, 1)
	go func() {
		_, err := f.cache.Token(context.Background(), "wx1")
		done <- err
	}()
	<-f.src.started
	f.outage(t)
	close(hold)
	if err := <-done; err == nil {
		t.Fatal("the commit failed, yet Token() returned no error")
	}
	got, err := f.cache.Token(context.Background(), "wx1")
	if err != nil || got.Value != "tok-1" {
		t.Fatalf("during the outage: %v, %v; want the fetched token from memory", got, err)
	}
}

// Close cancels a fetch in flight; its abort must still remove its intent,
// or every other writer stores capped tokens until the intent expires.
func TestCloseDuringAFetchForgetsItsIntent(t *testing.T) {
	f := newFixture(t)
	hold := f.holdFetches()
	defer close(hold)
	go func() { _, _ = f.cache.Token(context.Background(), "wx1") }()
	<-f.src.started
	intents := appKeys("tokenkeeper:", "wx1").intents
	if n, _ := f.m.ZMembers(intents); len(n) != 1 {
		t.Fatalf("intents during the fetch: %v, want 1", n)
	}
	if err := f.cache.Close(); err != nil {
		t.Fatal(err)
	}
	if f.m.Exists(intents) {
		n, _ := f.m.ZMembers(intents)
		t.Fatalf("after Close the intent is still registered: %v", n)
	}
}

// holdFetches makes every upstream fetch wait until the returned channel is
// closed; f.src.started receives as each one begins.
func (f *fixture) holdFetches() chan struct{} {
	hold := make(chan struct{})
	f.src.mu.Lock()
	f.src.block, f.src.started = hold, make(chan struct{}, 1)
	f.src.mu.Unlock()
	return hold
}

package redistest

import (
	"context"
	"testing"
	"time"
)

func TestStartRestartLosesData(t *testing.T) {
	s := Start(t)
	if s.Port() == 6379 {
		t.Fatal("must never use the default port")
	}
	c := s.Client()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after restart: exists=%d err=%v, want 0 <nil>", n, err)
	}
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded against a stopped server")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after resume: %v", err)
	}
}

func TestStopKeepingDataKeepsKeysAndTTLs(t *testing.T) {
	s := Start(t)
	c := s.Client()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.StopKeepingData(); err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after resume: %q, %v", v, err)
	}
	if ttl := c.TTL(ctx, "k").Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("TTL after resume = %v", ttl)
	}
	s.Restart()
	if n := c.Exists(ctx, "k").Val(); n != 0 {
		t.Fatal("Restart kept data")
	}
}

func TestFreezeThaw(t *testing.T) {
	s := Start(t)
	c := s.Client()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Freeze(); err != nil {
		t.Fatal(err)
	}
	// A frozen server accepts the command (the kernel buffers it) and never
	// answers: the read times out, it is not refused.
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := c.Get(tctx, "k").Err()
	cancel()
	if err == nil {
		t.Fatal("GET answered by a frozen server")
	}
	if err := s.Thaw(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after thaw: %q, %v (want the data kept)", v, err)
	}
	// Cleanup thaws a server left frozen, so Stop never waits on it.
	if err := s.Freeze(); err != nil {
		t.Fatal(err)
	}
}

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

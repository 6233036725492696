package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

func TestLastFetchWriter(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	cfg := &config.Config{Identity: "r9", Cache: config.Cache{KeyPrefix: "p:"}}
	w := newLastFetchWriter(client, cfg, slog.New(slog.DiscardHandler))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	w.now = func() time.Time { return at }
	w.Record(tokencache.FetchEvent{AppID: "wx1", Result: "ok"})
	w.Record(tokencache.FetchEvent{AppID: "wx2", Result: "transient", Err: errors.New("wechat: errcode -1 system busy")})
	w.Close()
	w.Record(tokencache.FetchEvent{AppID: "wx3", Result: "ok"}) // after Close: dropped, no panic

	get := func(key string) (lastFetchRecord, time.Duration) {
		t.Helper()
		data, err := client.Get(context.Background(), key).Bytes()
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		var rec lastFetchRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatal(err)
		}
		return rec, mr.TTL(key)
	}
	if rec, ttl := get("p:{wx1}:last_fetch"); rec != (lastFetchRecord{Result: "ok", At: at, By: "r9"}) || ttl != lastFetchTTL {
		t.Errorf("wx1 record %+v ttl %v", rec, ttl)
	}
	if rec, _ := get("p:{wx2}:last_fetch"); rec.Result != "transient" || rec.Error != "wechat: errcode -1 system busy" {
		t.Errorf("wx2 record %+v", rec)
	}
	if mr.Exists("p:{wx3}:last_fetch") {
		t.Error("a record after Close was written")
	}
}

// TestLastFetchWriterNeverBlocks: the cache calls the hook on its fetch
// path, so a stuck Redis must cost dropped records, not a stuck fetch.
func TestLastFetchWriterNeverBlocks(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond})
	defer client.Close()
	mr.Close() // every write now fails after a timeout
	w := newLastFetchWriter(client, &config.Config{Cache: config.Cache{KeyPrefix: "p:"}}, slog.New(slog.DiscardHandler))
	start := time.Now()
	for range 1000 {
		w.Record(tokencache.FetchEvent{AppID: "wx1", Result: "ok"})
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("1000 Records took %v with Redis down", d)
	}
	if w.dropped.Load() == 0 {
		t.Error("nothing dropped although Redis is down and the buffer holds 64")
	}
	closed := time.Now()
	w.Close()
	if d := time.Since(closed); d > closeGrace+500*time.Millisecond {
		t.Errorf("Close took %v", d)
	}
}

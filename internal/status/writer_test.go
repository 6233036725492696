package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

func TestWriter(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	cfg := &config.Config{Identity: "r9", Cache: config.Cache{KeyPrefix: "p:"}}
	w := NewWriter(client, cfg, slog.New(slog.DiscardHandler))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	w.now = func() time.Time { return at }
	w.Record(tokencache.FetchEvent{AppID: "wx1", Result: "ok"})
	w.Record(tokencache.FetchEvent{AppID: "wx2", Result: "transient", Err: errors.New("wechat: errcode -1 system busy")})
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'x'
	}
	w.Record(tokencache.FetchEvent{AppID: "wx4", Result: "error", Err: errors.New(string(long))})
	w.Close()
	w.Record(tokencache.FetchEvent{AppID: "wx3", Result: "ok"}) // after Close: dropped, no panic

	get := func(key string) (Record, time.Duration) {
		t.Helper()
		data, err := client.Get(context.Background(), key).Bytes()
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		rec, err := DecodeRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		return rec, mr.TTL(key)
	}
	if rec, ttl := get("p:{wx1}:last_fetch"); rec != (Record{Result: "ok", At: at, By: "r9"}) || ttl != RecordTTL {
		t.Errorf("wx1 record %+v ttl %v", rec, ttl)
	}
	if rec, _ := get("p:{wx2}:last_fetch"); rec.Result != "transient" || rec.Error != "wechat: errcode -1 system busy" {
		t.Errorf("wx2 record %+v", rec)
	}
	if rec, _ := get("p:{wx4}:last_fetch"); len(rec.Error) != MaxErrorLen+3 {
		t.Errorf("a 1000-byte error was stored as %d bytes, want %d", len(rec.Error), MaxErrorLen+3)
	}
	if mr.Exists("p:{wx3}:last_fetch") {
		t.Error("a record after Close was written")
	}
	if w.Dropped() != 0 {
		t.Errorf("%d dropped with a healthy Redis", w.Dropped())
	}
}

// TestWriterNeverBlocks: the cache calls the hook on its fetch path, so a
// stuck Redis must cost at most the records it never took, never a stuck
// fetch; 1000 results of one app are one record.
func TestWriterNeverBlocks(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond})
	defer client.Close()
	mr.Close() // every write now fails after a timeout
	w := NewWriter(client, &config.Config{Cache: config.Cache{KeyPrefix: "p:"}}, slog.New(slog.DiscardHandler))
	start := time.Now()
	for range 1000 {
		w.Record(tokencache.FetchEvent{AppID: "wx1", Result: "ok"})
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("1000 Records took %v with Redis down", d)
	}
	closed := time.Now()
	w.Close()
	if d := time.Since(closed); d > closeGrace+500*time.Millisecond {
		t.Errorf("Close took %v", d)
	}
	if n := w.Dropped(); n != 1 {
		t.Errorf("%d records dropped; want the one app's last record, which Redis never took", n)
	}
}

// TestWriterKeepsEveryAppsLastRecord: a burst of fetch results for 2,000
// apps (a cold start) loses none of them: every app's last result is
// written, later results of an app replacing earlier ones not yet
// written. With a fixed buffer, a burst dropped records and status showed
// stale entries.
func TestWriterKeepsEveryAppsLastRecord(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	w := NewWriter(client, &config.Config{Identity: "r1", Cache: config.Cache{KeyPrefix: "p:"}}, slog.New(slog.DiscardHandler))
	const n = 2000 // written well within Close's grace, even under -race
	for i := range n {
		w.Record(tokencache.FetchEvent{AppID: fmt.Sprintf("wx%05d", i), Result: "transient"})
	}
	for i := range n {
		w.Record(tokencache.FetchEvent{AppID: fmt.Sprintf("wx%05d", i), Result: "ok"})
	}
	// Wait for the writer to catch up, not for Close's grace (a loaded
	// machine may need more than a second): polled, as the writer has no
	// signal of its own.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		w.mu.Lock()
		left := len(w.pending)
		w.mu.Unlock()
		if left == 0 && mr.Exists(fmt.Sprintf("p:{wx%05d}:last_fetch", n-1)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records still unwritten after 20s", left)
		}
	}
	w.Close()
	for i := range n {
		key := fmt.Sprintf("p:{wx%05d}:last_fetch", i)
		data, err := mr.Get(key)
		if err != nil {
			t.Fatalf("%s: %v (dropped %d)", key, err, w.Dropped())
		}
		rec, err := DecodeRecord([]byte(data))
		if err != nil || rec.Result != "ok" {
			t.Fatalf("%s: %+v, %v; want the last result, ok", key, rec, err)
		}
	}
	if w.Dropped() != 0 {
		t.Fatalf("%d records dropped", w.Dropped())
	}
}

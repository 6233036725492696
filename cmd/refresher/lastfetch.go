package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// lastFetchRecord is what `refresher status` shows of an app's last
// upstream fetch. Error is the fetch error's text, which the wechat package
// guarantees holds no secret.
type lastFetchRecord struct {
	Result string    `json:"result"`
	At     time.Time `json:"at"`
	Error  string    `json:"error,omitempty"`
	By     string    `json:"by,omitempty"` // the replica that fetched
}

// lastFetchTTL keeps a record of an app nobody fetches any more from
// lingering forever.
const lastFetchTTL = 7 * 24 * time.Hour

// lastFetchWriter writes fetch results to Redis from tokencache's OnFetch
// hook, which must not block: events go through a small buffer to one
// goroutine, and are dropped (counted) if Redis is too slow to keep up.
type lastFetchWriter struct {
	client   redis.UniversalClient
	cfg      *config.Config
	log      *slog.Logger
	events   chan tokencache.FetchEvent
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	dropped  atomic.Int64
	now      func() time.Time
	// ctx is cancelled closeGrace after Close, so that shutdown never
	// waits long on a Redis that does not answer.
	ctx    context.Context
	cancel context.CancelFunc
}

// closeGrace is how long Close lets queued records be written.
const closeGrace = time.Second

func newLastFetchWriter(client redis.UniversalClient, cfg *config.Config, log *slog.Logger) *lastFetchWriter {
	w := &lastFetchWriter{
		client: client, cfg: cfg, log: log, now: time.Now,
		events: make(chan tokencache.FetchEvent, 64),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.loop()
	return w
}

// Record queues ev; it never blocks.
func (w *lastFetchWriter) Record(ev tokencache.FetchEvent) {
	select {
	case <-w.stop:
		return
	default:
	}
	select {
	case w.events <- ev:
	default:
		w.dropped.Add(1)
	}
}

// Close writes what is queued (bounded) and stops.
func (w *lastFetchWriter) Close() {
	w.stopOnce.Do(func() { close(w.stop) })
	grace := time.AfterFunc(closeGrace, w.cancel)
	<-w.done
	grace.Stop()
	w.cancel()
	if n := w.dropped.Load(); n > 0 {
		w.log.Warn("refresher: last-fetch records dropped because Redis was slow", "dropped", n)
	}
}

func (w *lastFetchWriter) loop() {
	defer close(w.done)
	for {
		select {
		case ev := <-w.events:
			w.write(ev)
		case <-w.stop:
			for {
				select {
				case ev := <-w.events:
					if w.ctx.Err() != nil {
						w.dropped.Add(1)
						continue
					}
					w.write(ev)
				default:
					return
				}
			}
		}
	}
}

func (w *lastFetchWriter) write(ev tokencache.FetchEvent) {
	rec := lastFetchRecord{Result: ev.Result, At: w.now().UTC().Truncate(time.Millisecond), By: w.cfg.Identity}
	if ev.Err != nil {
		rec.Error = truncate(ev.Err.Error(), 300)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
	defer cancel()
	if err := w.client.Set(ctx, w.cfg.LastFetchKey(ev.AppID), data, lastFetchTTL).Err(); err != nil {
		w.log.Debug("refresher: could not record the last fetch", "app", ev.AppID, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

package status

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// Writer writes fetch results to Redis from tokencache's OnFetch hook,
// which must not block: events go through a small buffer to one
// goroutine, and are dropped (counted, and logged at Close) if Redis is
// too slow to keep up.
type Writer struct {
	client   redis.UniversalClient
	cfg      *config.Config
	log      *slog.Logger
	now      func() time.Time
	events   chan tokencache.FetchEvent
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	dropped  atomic.Int64
	// ctx is cancelled closeGrace after Close, so that shutdown never
	// waits long on a Redis that does not answer.
	ctx    context.Context
	cancel context.CancelFunc
}

// closeGrace is how long Close lets queued records be written.
const closeGrace = time.Second

// writeTimeout bounds one record's SET.
const writeTimeout = 2 * time.Second

// NewWriter starts a Writer that records as cfg.Identity under
// cfg.LastFetchKey. The caller must Close it.
func NewWriter(client redis.UniversalClient, cfg *config.Config, log *slog.Logger) *Writer {
	w := &Writer{
		client: client, cfg: cfg, log: log, now: time.Now,
		events: make(chan tokencache.FetchEvent, 64),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.loop()
	return w
}

// Record queues ev; it never blocks. After Close it does nothing.
func (w *Writer) Record(ev tokencache.FetchEvent) {
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

// Dropped is how many records were not written because the buffer was
// full or Close's grace ran out.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// Close writes what is queued (for at most about a second) and stops.
func (w *Writer) Close() {
	w.stopOnce.Do(func() { close(w.stop) })
	grace := time.AfterFunc(closeGrace, w.cancel)
	<-w.done
	grace.Stop()
	w.cancel()
	if n := w.dropped.Load(); n > 0 {
		w.log.Warn("refresher: last-fetch records dropped because Redis was slow", "dropped", n)
	}
}

func (w *Writer) loop() {
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

func (w *Writer) write(ev tokencache.FetchEvent) {
	rec := Record{Result: ev.Result, At: w.now().UTC().Truncate(time.Millisecond), By: w.cfg.Identity}
	if ev.Err != nil {
		rec.Error = truncate(ev.Err.Error(), MaxErrorLen)
	}
	ctx, cancel := context.WithTimeout(w.ctx, writeTimeout)
	defer cancel()
	if err := w.client.Set(ctx, w.cfg.LastFetchKey(ev.AppID), rec.Encode(), RecordTTL).Err(); err != nil {
		w.log.Debug("refresher: could not record the last fetch", "app", ev.AppID, "err", err)
	}
}

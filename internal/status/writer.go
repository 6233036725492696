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
// which must not block. Record only notes the app's latest result (one
// entry per app, however many results come); one goroutine writes what is
// noted in pipelined batches. So a burst (a cold start of 100,000 apps)
// loses no app's last fetch: a result is superseded only by a newer one of
// the same app. Records are lost (counted as dropped, and logged at Close)
// only when Close's grace runs out before they are written.
type Writer struct {
	client   redis.UniversalClient
	cfg      *config.Config
	log      *slog.Logger
	now      func() time.Time
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	dropped  atomic.Int64

	mu      sync.Mutex
	pending map[string]noted // by app: the latest result not yet written
	wake    chan struct{}    // one buffered wake-up: pending is not empty

	// ctx is cancelled closeGrace after Close, so that shutdown never
	// waits long on a Redis that does not answer.
	ctx    context.Context
	cancel context.CancelFunc
}

// noted is a result as Record saw it.
type noted struct {
	ev tokencache.FetchEvent
	at time.Time
}

// closeGrace is how long Close lets queued records be written.
const closeGrace = time.Second

// writeTimeout bounds one batch's pipeline.
const writeTimeout = 2 * time.Second

// writeBatch is how many records one pipeline writes.
const writeBatch = 256

// NewWriter starts a Writer that records as cfg.Identity under
// cfg.LastFetchKey. The caller must Close it.
func NewWriter(client redis.UniversalClient, cfg *config.Config, log *slog.Logger) *Writer {
	w := &Writer{
		client: client, cfg: cfg, log: log, now: time.Now,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		pending: make(map[string]noted),
		wake:    make(chan struct{}, 1),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.loop()
	return w
}

// Record notes ev as its app's latest result; it never blocks on Redis.
// After Close it does nothing.
func (w *Writer) Record(ev tokencache.FetchEvent) {
	select {
	case <-w.stop:
		return
	default:
	}
	n := noted{ev: ev, at: w.now()}
	w.mu.Lock()
	if w.pending == nil { // closed meanwhile
		w.mu.Unlock()
		return
	}
	w.pending[ev.AppID] = n
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// Dropped is how many apps' last records were not written because
// Close's grace ran out.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// Close writes what is noted (for at most about a second) and stops.
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
		case <-w.wake:
			w.flush()
		case <-w.stop:
			w.flush()
			w.mu.Lock()
			w.dropped.Add(int64(len(w.pending))) // Close's grace ran out
			w.pending = nil
			w.mu.Unlock()
			return
		}
	}
}

// flush writes everything noted, writeBatch records per pipeline, until
// nothing is left or the writer's context ends (Close's grace). A batch
// Redis refused is noted again, unless a newer result of its app came
// meanwhile, and retried after retryDelay.
func (w *Writer) flush() {
	batch := make([]noted, 0, writeBatch)
	for w.ctx.Err() == nil {
		batch = batch[:0]
		w.mu.Lock()
		for app, n := range w.pending {
			batch = append(batch, n)
			delete(w.pending, app)
			if len(batch) == writeBatch {
				break
			}
		}
		if len(w.pending) == 0 {
			// A map never shrinks: after a burst of 100,000 apps it would
			// keep their buckets for good.
			w.pending = make(map[string]noted)
		}
		w.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		err := w.write(batch)
		if err == nil {
			continue
		}
		w.log.Debug("refresher: could not record the last fetches; retrying", "records", len(batch), "err", err)
		w.mu.Lock()
		for _, n := range batch {
			if _, newer := w.pending[n.ev.AppID]; !newer {
				w.pending[n.ev.AppID] = n
			}
		}
		w.mu.Unlock()
		select {
		case <-w.ctx.Done():
		case <-time.After(retryDelay):
		}
	}
}

// retryDelay is the wait after a batch Redis did not take.
const retryDelay = time.Second

func (w *Writer) write(batch []noted) error {
	ctx, cancel := context.WithTimeout(w.ctx, writeTimeout)
	defer cancel()
	pipe := w.client.Pipeline()
	for _, n := range batch {
		rec := Record{Result: n.ev.Result, At: n.at.UTC().Truncate(time.Millisecond), By: w.cfg.Identity}
		if n.ev.Err != nil {
			rec.Error = truncate(n.ev.Err.Error(), MaxErrorLen)
		}
		pipe.Set(ctx, w.cfg.LastFetchKey(n.ev.AppID), rec.Encode(), RecordTTL)
	}
	_, err := pipe.Exec(ctx)
	return err
}

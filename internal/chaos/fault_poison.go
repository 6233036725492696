package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// PoisonedRecord is one malformed record a poison-record fault wrote into
// a live app's record key, and what became of it. A correct cache never
// hands it out and replaces it with exactly one fetch, fleet-wide.
type PoisonedRecord struct {
	App      string        `json:"app"`
	Mutation string        `json:"mutation"`
	Written  time.Time     `json:"written,omitzero"`
	TTL      time.Duration `json:"ttl_ns"` // the live record's, given to the poison
	Error    string        `json:"error,omitempty"`
	// Rewrites counts later values of the key that still held the
	// poison's token: a writer that took the poison for a record (say,
	// capped it).
	Rewrites int `json:"rewrites_keeping_token"`
	// Gone is when the key vanished (deleted, or its TTL ran out) before a
	// new token was stored; Replaced when a record with a new token was.
	Gone     time.Time `json:"gone,omitzero"`
	Replaced time.Time `json:"replaced,omitzero"`
	// Mints is what the fake minted for the app from Written to the end
	// of the fault's window; Ideal how many refreshes fell due then;
	// OtherFaults how many other faults in that stretch may force the app
	// to refetch. More than Ideal + 1 + OtherFaults is a mint storm.
	Mints       int `json:"mints_in_window"`
	Ideal       int `json:"ideal_in_window"`
	OtherFaults int `json:"other_faults_refetching"`

	live  string // the token the record held (never printed)
	value string // what was written (never printed: it may hold the token)
}

// poisonBound is how soon a correct cache replaces a corrupt record: a
// reader rereads Redis within a near-cache period, may wait out a fetch
// lock, then fetches.
func (r *run) poisonBound() time.Duration {
	return r.cfg.Cache.NearMaxAge + r.cfg.Cache.LockTTL + r.cfg.Cache.FetchTimeout + time.Second
}

// setIfUnchanged writes a poison only over the very record it was made
// from, with the TTL given: a refresh that lands meanwhile wins.
var setIfUnchanged = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
`)

// writePoison replaces app's live record with mutation m of it, keeping
// the live record's TTL.
func (r *run) writePoison(ctx context.Context, app string, m mutation) *PoisonedRecord {
	rec := &PoisonedRecord{App: app, Mutation: m.name}
	key := recordKey(r.cfg.KeyPrefix, app)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		var live string
		var ttl time.Duration
		if live, err = r.client.Get(cctx, key).Result(); err == nil {
			ttl, err = r.client.PTTL(cctx, key).Result()
		}
		if err == nil && ttl <= 0 {
			err = errors.New("the live record has no TTL")
		}
		var value string
		if err == nil {
			value, err = poisonValue(live, m, time.Now())
		}
		var set int64
		if err == nil {
			set, err = setIfUnchanged.Run(cctx, r.client, []string{key}, live, value, ttl.Milliseconds()).Int64()
		}
		cancel()
		if err == nil && set == 1 {
			rec.Written, rec.TTL, rec.live, rec.value = time.Now(), ttl, tokenOfRecord(live), value
			return rec
		}
		if err == nil {
			err = errors.New("the record kept changing under us")
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			break
		}
	}
	rec.Error = err.Error()
	return rec
}

// corruptReads adds up the corrupt records the readers' caches have read,
// as of their last report lines.
func (r *run) corruptReads() int64 {
	var n int64
	for _, rp := range r.readers {
		rp.mu.Lock()
		n += rp.last.Cache.CorruptRecords
		rp.mu.Unlock()
	}
	return n
}

// injectPoison writes one malformed record into each of several live
// apps' record keys (one mutation each, walking the mutation table),
// without an announcement, as a buggy writer would; then it watches each
// key until a record with a new token replaces the poison, at most until
// the poison's TTL has run out and a refetch had time to land.
func (r *run) injectPoison(ctx context.Context, f *FaultRecord) {
	apps := r.pickApps(min(len(mutations), r.cfg.Apps))
	for _, app := range apps {
		defer r.claim(app)()
	}
	corruptBefore := r.corruptReads()
	f.At = time.Now()
	var written []*PoisonedRecord
	r.claimsMu.Lock()
	first := r.poisons
	r.poisons += len(apps)
	r.claimsMu.Unlock()
	for i, app := range apps {
		m := mutations[(first+i)%len(mutations)]
		rec := r.writePoison(ctx, app, m)
		f.Poison = append(f.Poison, rec)
		if rec.Error == "" {
			written = append(written, rec)
			f.Refetch = append(f.Refetch, app) // its one replacement
		}
	}
	f.App = strings.Join(apps, ",")
	f.Applied = len(written) > 0
	if !f.Applied {
		f.Detail = "no poison could be written: " + f.Poison[0].Error
		return
	}
	// Watch every key until it holds a new token.
	cur := map[*PoisonedRecord]string{}
	for _, rec := range written {
		cur[rec] = rec.value
	}
	for len(cur) > 0 && ctx.Err() == nil {
		for rec, v := range cur {
			gctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			now, err := r.client.Get(gctx, recordKey(r.cfg.KeyPrefix, rec.App)).Result()
			cancel()
			switch {
			case errors.Is(err, redis.Nil):
				if rec.Gone.IsZero() {
					rec.Gone = time.Now()
				}
			case err != nil || now == v:
			case tokenOfRecord(now) != "" && tokenOfRecord(now) != rec.live && tokenOfRecord(now) != tokenOfRecord(rec.value):
				rec.Replaced = time.Now()
				delete(cur, rec)
				continue
			default:
				rec.Rewrites++
				cur[rec] = now
			}
			if time.Since(rec.Written) > rec.TTL+r.poisonBound() {
				delete(cur, rec) // given up: the report says it was never replaced
			}
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	var parts []string
	for _, rec := range f.Poison {
		if rec.Error != "" {
			parts = append(parts, rec.App+" "+rec.Mutation+": NOT WRITTEN: "+rec.Error)
			continue
		}
		parts = append(parts, rec.App+" "+rec.Mutation+": "+rec.fate())
	}
	f.Detail = fmt.Sprintf("poisoned %d record(s) (no announcement): %s", len(written), strings.Join(parts, "; "))
	sleepCtx(ctx, r.settle())
	f.Detail += fmt.Sprintf("; the readers' caches read %d corrupt record(s) meanwhile", r.corruptReads()-corruptBefore)
	f.Ended = time.Now()
}

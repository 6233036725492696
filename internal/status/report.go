package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Report is the fleet's state as `refresher status` prints it.
type Report struct {
	// Leader is the identity holding the lease, "" if none.
	Leader string
	Apps   []App
	// Tickets are the tickets apps keep (tickets.go).
	Tickets []Ticket
}

// App is one app's line. A field whose read failed holds the error
// instead; the other fields are still shown.
type App struct {
	ID   string
	Mode wechat.Mode

	Token    tokencache.Token // valid if HasToken
	HasToken bool
	TokenErr error

	LastFetch    Record // valid if HasLastFetch
	HasLastFetch bool
	LastFetchErr error // a Redis error or a corrupt record (ErrCorruptRecord)

	FetchesToday int64 // valid if FetchesErr is nil
	FetchesErr   error
}

// gatherTimeout bounds the whole status read.
const gatherTimeout = 5 * time.Second

// Print reads the status of the fleet cfg describes straight from Redis
// (no replica needs to run, nothing is fetched) and writes it to w.
func Print(ctx context.Context, cfg *config.Config, w io.Writer) error {
	cache, client, err := backend.Open(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(ctx, gatherTimeout)
	defer cancel()
	rep, err := Gather(ctx, cfg, client, cache)
	if err != nil {
		return err
	}
	return rep.Write(w, time.Now())
}

// Gather reads the lease holder and every configured app's token, last
// fetch record and fetch count. It fails only if Redis is unreachable or
// the lease cannot be read; per-app read errors are kept in the App.
func Gather(ctx context.Context, cfg *config.Config, client redis.UniversalClient, cache *tokencache.Cache) (Report, error) {
	if err := client.Ping(ctx).Err(); err != nil {
		return Report{}, fmt.Errorf("redis %s unreachable: %w", strings.Join(cfg.Redis.Addrs, ","), err)
	}
	// An elector that never runs only reads the lease.
	probe, err := lock.NewElector(backend.LocksOf(client).Elector(cfg.ElectorConfig(client, lock.LeaderCallbacks{}, nil)))
	if err != nil {
		return Report{}, err
	}
	var rep Report
	if rep.Leader, err = probe.Leader(ctx); err != nil {
		return Report{}, err
	}
	for _, app := range cfg.Apps {
		a := App{ID: app.ID, Mode: app.Mode}
		a.Token, a.HasToken, a.TokenErr = cache.Admin().Peek(ctx, app.ID)
		a.LastFetch, a.HasLastFetch, a.LastFetchErr = readRecord(ctx, client, cfg.LastFetchKey(app.ID))
		a.FetchesToday, a.FetchesErr = cache.Admin().FetchesToday(ctx, app.ID)
		rep.Apps = append(rep.Apps, a)
	}
	rep.Tickets = gatherTickets(ctx, cfg, client)
	return rep, nil
}

func readRecord(ctx context.Context, client redis.UniversalClient, key string) (Record, bool, error) {
	data, err := client.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return Record{}, false, nil
	case err != nil:
		return Record{}, false, err
	}
	rec, err := DecodeRecord(data)
	if err != nil {
		return Record{}, false, fmt.Errorf("%s: %w", key, err)
	}
	return rec, true, nil
}

// Write prints r as of now: the leader line, then a table with one row
// per app. Tokens appear as fingerprints only.
func (r Report) Write(w io.Writer, now time.Time) error {
	leader := r.Leader
	if leader == "" {
		leader = "(none: no replica holds the lease)"
	}
	if _, err := fmt.Fprintf(w, "leader: %s\n\n", leader); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tMODE\tTOKEN\tVERSION\tUSABLE FOR\tLAST FETCH\tFETCHES TODAY")
	for _, a := range r.Apps {
		token, version, usable := "-", "-", "-"
		switch {
		case a.TokenErr != nil:
			token = "error: " + a.TokenErr.Error()
		case a.HasToken:
			token = wechat.Fingerprint(a.Token.Value)
			version = fmt.Sprint(a.Token.Version)
			usable = a.Token.ExpiresIn(now).Truncate(time.Second).String()
		}
		last := "-"
		switch {
		case a.LastFetchErr != nil:
			last = "error: " + a.LastFetchErr.Error()
		case a.HasLastFetch:
			rec := a.LastFetch
			last = fmt.Sprintf("%s %s ago by %s", rec.Result, now.Sub(rec.At).Truncate(time.Second), rec.By)
			if rec.Error != "" {
				last += ": " + rec.Error
			}
		}
		fetches := "-"
		if a.FetchesErr == nil {
			fetches = fmt.Sprint(a.FetchesToday)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Mode, token, version, usable, last, fetches)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeTickets(w, r.Tickets, now)
}

package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Ticket is one kept ticket's line: an app and a kind it lists.
type Ticket struct {
	AppID, Kind string
	Ticket      tokencache.Token // valid if Has
	Has         bool
	Err         error // a Redis error or a corrupt record
}

// gatherTickets reads the record of every ticket an app keeps, straight
// from Redis (the record grammar is tokencache's DecodeRecord).
func gatherTickets(ctx context.Context, cfg *config.Config, client redis.UniversalClient) []Ticket {
	var out []Ticket
	for _, app := range cfg.Apps {
		for _, kind := range app.Tickets {
			t := Ticket{AppID: app.ID, Kind: kind}
			key := tokencache.RecordKey(tokencache.TicketKeyPrefix(cfg.Cache.KeyPrefix, kind), app.ID)
			s, err := client.Get(ctx, key).Result()
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				t.Err = err
			default:
				t.Ticket, t.Err = tokencache.DecodeRecord(key, s)
				t.Has = t.Err == nil
			}
			out = append(out, t)
		}
	}
	return out
}

// writeTickets prints the tickets table (nothing if no app keeps tickets):
// fingerprints and remaining usable life only.
func writeTickets(w io.Writer, tickets []Ticket, now time.Time) error {
	if len(tickets) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tTICKET\tFINGERPRINT\tVERSION\tUSABLE FOR")
	for _, t := range tickets {
		fp, version, usable := "-", "-", "-"
		switch {
		case t.Err != nil:
			fp = "error: " + t.Err.Error()
		case t.Has:
			fp, version = wechat.Fingerprint(t.Ticket.Value), fmt.Sprint(t.Ticket.Version)
			usable = t.Ticket.ExpiresIn(now).Truncate(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.AppID, t.Kind, fp, version, usable)
	}
	return tw.Flush()
}

package tokencmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// TicketReply is the printed ticket, the same shape as the HTTP API's
// answer.
type TicketReply struct {
	Ticket    string `json:"ticket"`
	ExpiresIn int    `json:"expires_in"` // usable life left, whole seconds
	ExpiresAt string `json:"expires_at"` // RFC 3339, UTC
	Version   int64  `json:"version"`
}

// Ticket prints app's current ticket of kind ("jsapi" or "wx_card"),
// fetching one (with the app's current access token, once for the fleet)
// if none is usable. The caller has checked that cfg lists app.
func Ticket(ctx context.Context, cfg *config.Config, app, kind string, w io.Writer) error {
	cache, client, err := backend.Open(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	defer cache.Close()
	tickets, err := backend.NewTickets(cfg, client, cache)
	if err != nil {
		return err
	}
	defer tickets.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*Timeout(cfg)) // a token fetch may come first
	defer cancel()
	tok, err := tickets.Ticket(ctx, app, kind)
	if err != nil {
		return fmt.Errorf("%s ticket for %s: %w", kind, app, err)
	}
	now := time.Now()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(TicketReply{Ticket: tok.Value, ExpiresIn: int(tok.ExpiresIn(now) / time.Second),
		ExpiresAt: tok.UsableUntil.UTC().Format(time.RFC3339), Version: tok.Version})
}

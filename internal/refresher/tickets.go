package refresher

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/httpapi"
	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// wireTickets builds the ticket caches, their metrics and one scheduler
// per kind that some app keeps warm (each treats its ticket cache as the
// token scheduler treats the token cache). Nothing is built when no app
// lists tickets and no gateway serves them.
func (r *Replica) wireTickets(reg prometheus.Registerer) ([]*scheduler.Scheduler, error) {
	byKind := r.cfg.TicketApps()
	// The gateway serves getticket for every app, kept warm or not: without
	// a ticket cache each SDK call would mint a ticket of its own upstream.
	if len(byKind) == 0 && r.cfg.Gateway.Addr == "" {
		return nil, nil
	}
	tm, err := metrics.NewTicketMetrics(reg)
	if err != nil {
		return nil, err
	}
	// The hooks do not say which kind changed: a change re-plans the app
	// in every ticket scheduler (one Peek more for the other kind).
	var scheds atomic.Pointer[[]*scheduler.Scheduler]
	hooks := tokencache.Hooks{
		OnFetch: tm.ObserveFetch,
		OnChange: func(app string) {
			if p := scheds.Load(); p != nil {
				for _, s := range *p {
					s.Changed(app)
				}
			}
		},
	}
	if r.tickets, err = backend.NewTickets(r.cfg, r.client, r.cache, tokencache.WithLogger(r.log), tokencache.WithHooks(hooks)); err != nil {
		return nil, err
	}
	var out []*scheduler.Scheduler
	for _, kind := range wechat.TicketKinds() {
		apps := byKind[kind]
		if len(apps) == 0 {
			continue
		}
		tc, err := r.tickets.Kind(kind)
		if err != nil {
			return nil, err
		}
		s, err := scheduler.New(scheduler.Config{Apps: apps, Refresher: tc, Logger: r.log.With("ticket", kind)})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	scheds.Store(&out)
	tm.SetSource(ticketGauges(r.tickets, byKind))
	return out, nil
}

// TLSConfig is the server TLS configuration of the replica's listeners
// (http.tls, its certificate re-read on every reload), nil without TLS.
// The gateway's listener uses it too.
func (r *Replica) TLSConfig() *tls.Config {
	if r.cert == nil {
		return nil
	}
	return r.cert.ServerConfig()
}

// Tickets is the replica's ticket caches, nil when none are built.
func (r *Replica) Tickets() *tokencache.Tickets { return r.tickets }

// ticketsAPI is the replica's tickets for the HTTP API, nil (no ticket
// routes) when none are kept.
func (r *Replica) ticketsAPI() httpapi.Tickets {
	if r.tickets == nil {
		return nil
	}
	return r.tickets
}

// runTicketSchedulers runs each scheduler until leading ends; done is
// closed when all have stopped.
func runTicketSchedulers(leading context.Context, scheds []*scheduler.Scheduler, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range scheds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(leading); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("refresher: ticket scheduler stopped", "err", err)
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// ticketGauges reads each kept ticket at scrape time, bounded like the
// token gauges.
func ticketGauges(t *tokencache.Tickets, byKind map[string][]string) func() []metrics.TicketGauge {
	return func() []metrics.TicketGauge {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		now := time.Now()
		var out []metrics.TicketGauge
		for _, kind := range wechat.TicketKinds() {
			tc, err := t.Kind(kind)
			if err != nil {
				continue
			}
			for _, app := range byKind[kind] {
				g := metrics.TicketGauge{AppID: app, Kind: kind}
				if tok, found, err := tc.Peek(ctx, app); err == nil && found {
					g.HasTicket, g.UsableFor = true, tok.UsableUntil.Sub(now)
				}
				out = append(out, g)
			}
		}
		return out
	}
}

package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/gateway"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
)

// Serve runs one replica until ctx is done (SIGINT/SIGTERM). With
// gateway.addr set, every replica also serves the WeChat-compatible
// gateway on that listener of its own, from the same cache.
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...refresher.Option) error {
	if cfg.Gateway.Addr == "" {
		r, err := refresher.New(cfg, log, opts...)
		if err != nil {
			return err
		}
		return r.Run(ctx)
	}
	ln, err := net.Listen("tcp", cfg.Gateway.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("gateway.addr %s is already in use by another process: stop it, or choose another address (TOKENKEEPER_GATEWAY_ADDR)", cfg.Gateway.Addr)
		}
		return fmt.Errorf("listen on gateway.addr %s: %w", cfg.Gateway.Addr, err)
	}
	r, err := refresher.New(cfg, log, opts...)
	if err != nil {
		ln.Close()
		return err
	}
	gw, err := newGateway(cfg, r, log)
	if err != nil {
		ln.Close()
		r.Close()
		return err
	}
	// Credentials change with a reload (revoking one cuts off its tokens);
	// the rest of the gateway only with a restart.
	r.AddReloadStep(func(next *config.Config) error { return gw.SetCredentials(gatewayCredentials(next)) })
	if tc := r.TLSConfig(); tc != nil { // http.tls covers the gateway's listener too
		ln = tls.NewListener(ln, tc)
	}
	srv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: 5 * time.Second,
		// No read or write timeout: media streams both ways; each request
		// is bounded by gateway.timeout instead.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("gateway: WeChat-compatible API listening", "addr", ln.Addr().String(), "tls", r.TLSConfig() != nil, "credentials", len(cfg.Gateway.Credentials))
	go func() {
		select {
		case err := <-served:
			stop(fmt.Errorf("gateway server: %w", err))
		case <-runCtx.Done():
		}
	}()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-runCtx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("gateway: shutdown cut short", "err", err)
		}
	}()
	runErr := r.Run(runCtx)
	stop(nil)
	<-drained
	if cause := context.Cause(runCtx); runErr == nil && ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return runErr
}

// newGateway builds the gateway of replica r from cfg; getticket is served
// from the replica's ticket caches.
func newGateway(cfg *config.Config, r *refresher.Replica, log *slog.Logger) (*gateway.Gateway, error) {
	m, err := gateway.NewMetrics(r.Registry())
	if err != nil {
		return nil, err
	}
	apps := make([]gateway.App, len(cfg.Apps))
	for i, a := range cfg.Apps {
		apps[i] = gateway.App{ID: a.ID, Secret: a.Secret}
	}
	g := cfg.Gateway
	var tickets gateway.Tickets
	if t := r.Tickets(); t != nil { // a nil *Tickets must not become a non-nil interface
		tickets = t
	}
	return gateway.New(gateway.Config{
		Tokens:          r.Cache(),
		Tickets:         tickets,
		Apps:            apps,
		Credentials:     gatewayCredentials(cfg),
		AcceptAppSecret: g.AcceptAppSecret,
		UpstreamURL:     cfg.WeChat.BaseURL,
		Ledger:          gateway.RedisLedger(r.Redis(), cfg.Cache.KeyPrefix),
		MaxBody:         g.MaxBody,
		RetryBuffer:     g.RetryBuffer,
		Timeout:         g.Timeout,
		MaxConcurrent:   g.MaxConcurrent,
		Metrics:         m,
		Logger:          log.With("component", "gateway", "identity", cfg.Identity),
		AccessLog:       g.AccessLog,
	})
}

// gatewayCredentials are cfg's gateway credentials, as the gateway takes
// them.
func gatewayCredentials(cfg *config.Config) []gateway.Credential {
	creds := make([]gateway.Credential, len(cfg.Gateway.Credentials))
	for i, k := range cfg.Gateway.Credentials {
		creds[i] = gateway.Credential{Name: k.Name, Key: k.Key, Apps: k.Apps}
	}
	return creds
}

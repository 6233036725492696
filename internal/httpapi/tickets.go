package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Tickets serves an app's tickets; *tokencache.Tickets is one.
type Tickets interface {
	Ticket(ctx context.Context, appID, kind string) (tokencache.Token, error)
}

// Ticket routes (and "route" labels).
const (
	RouteTicket        = "/v1/apps/{appid}/tickets/{kind}"
	RouteJSSDKConfig   = "/v1/apps/{appid}/jssdk-config"
	RouteCardSignature = "/v1/apps/{appid}/card-signature"
)

// ticketRoutes registers the ticket routes, if Config.Tickets is set. They
// share the token route's authentication, authorization, status codes and
// JSON error shape; an app serves only the ticket kinds Config.AppTickets
// lists for it (the kinds the scheduler keeps warm), so no caller can make
// the fleet spend getticket calls on a kind nobody uses.
func (a *api) ticketRoutes(mux *http.ServeMux, cfg Config) error {
	if cfg.Tickets == nil {
		if len(cfg.AppTickets) > 0 {
			return errors.New("AppTickets: set, but Tickets is nil")
		}
		return nil
	}
	signer, err := jssdk.NewSigner(cfg.Tickets, jssdk.WithClock(a.now))
	if err != nil {
		return err
	}
	a.tickets, a.signer, a.appTickets = cfg.Tickets, signer, map[string]map[string]bool{}
	var errs []error
	apps := a.auth.Load().apps
	for app, kinds := range cfg.AppTickets {
		if !apps[app] {
			errs = append(errs, fmt.Errorf("AppTickets: app %q is not configured", app))
		}
		a.appTickets[app] = map[string]bool{}
		for _, kind := range kinds {
			if p := wechat.TicketKindProblem(kind); p != "" {
				errs = append(errs, fmt.Errorf("AppTickets[%q]: %s", app, p))
			}
			a.appTickets[app][kind] = true
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	get := []string{http.MethodGet, http.MethodHead}
	mux.Handle(RouteTicket, a.route(RouteTicket, get, a.appRoute(a.serveTicket)))
	mux.Handle(RouteJSSDKConfig, a.route(RouteJSSDKConfig, []string{http.MethodPost}, a.appRoute(a.serveJSSDKConfig)))
	mux.Handle(RouteCardSignature, a.route(RouteCardSignature, []string{http.MethodPost}, a.appRoute(a.serveCardSignature)))
	return nil
}

// keyPageHosts turns an API key's page hosts into a set (nil: any host).
func keyPageHosts(hosts []string) (map[string]bool, error) {
	if len(hosts) == 0 {
		return nil, nil
	}
	set := map[string]bool{}
	for _, h := range hosts {
		if p := jssdk.PageHostProblem(h); p != "" {
			return nil, fmt.Errorf("page host %q: %s", truncate(h, 64), p)
		}
		set[strings.ToLower(h)] = true
	}
	return set, nil
}

// kindServed checks that app serves kind; it answers 404 otherwise.
func (a *api) kindServed(w http.ResponseWriter, app, kind string) bool {
	if p := wechat.TicketKindProblem(kind); p != "" {
		writeError(w, http.StatusNotFound, p)
		return false
	}
	if !a.appTickets[app][kind] {
		writeError(w, http.StatusNotFound, fmt.Sprintf("app %q has no %s ticket configured (tickets: in its config)", app, kind))
		return false
	}
	return true
}

type ticketResponse struct {
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
	ExpiresAt string `json:"expires_at"`
	Version   int64  `json:"version"`
}

func (a *api) serveTicket(w http.ResponseWriter, r *http.Request, app string) {
	kind := r.PathValue("kind")
	if !a.kindServed(w, app, kind) {
		return
	}
	tok, err := a.tickets.Ticket(r.Context(), app, kind)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, ticketResponse{
		Ticket:    tok.Value,
		ExpiresIn: int64(tok.ExpiresIn(a.now()) / time.Second),
		ExpiresAt: tok.UsableUntil.UTC().Format(time.RFC3339),
		Version:   tok.Version,
	})
}

func (a *api) serveJSSDKConfig(w http.ResponseWriter, r *http.Request, app string) {
	if !a.kindServed(w, app, wechat.TicketJSAPI) {
		return
	}
	var body struct {
		URL string `json:"url"`
	}
	if !a.readBody(w, r, &body, `"url"`) {
		return
	}
	u, err := jssdk.ParsePageURL(body.URL)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if hosts := a.pageHostsOf(r); hosts != nil && !hosts[strings.ToLower(u.Hostname())] {
		writeError(w, http.StatusForbidden, fmt.Sprintf("API key %q may not sign pages of host %q", reqOf(r).key, truncate(u.Hostname(), 64)))
		return
	}
	cfg, err := a.signer.Config(r.Context(), app, body.URL)
	if err != nil {
		a.failSigning(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, cfg)
}

func (a *api) serveCardSignature(w http.ResponseWriter, r *http.Request, app string) {
	if !a.kindServed(w, app, wechat.TicketWxCard) {
		return
	}
	var body jssdk.CardRequest
	if !a.readBody(w, r, &body, `"card_id", "code", "openid", "balance", "location_id", "card_type" and "choose_card"`) {
		return
	}
	sig, err := a.signer.Card(r.Context(), app, body)
	if err != nil {
		a.failSigning(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, sig)
}

// failSigning answers a signing error: a ticket not live at that moment is
// 503 (a new one is on its way), a caller's bad value 400, anything else
// what the token route would answer.
func (a *api) failSigning(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, jssdk.ErrNoLiveTicket):
		reqOf(r).err = err
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.As(err, new(*jssdk.CardFieldError)):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		a.fail(w, r, err)
	}
}

// readBody decodes one JSON object of the allowed fields from a JSON body
// of at most MaxBodyBytes into v, answering 4xx itself when it cannot.
func (a *api) readBody(w http.ResponseWriter, r *http.Request, v any, fields string) bool {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want application/json", truncate(ct, 64)))
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body failed")
		return false
	}
	if len(body) > MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, errBodyTooLarge.Error())
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := describeBodyError(err)
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			msg = "unknown field (allowed: " + fields + ")"
		}
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+msg)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid JSON body: data after the object")
		return false
	}
	return true
}

// describeBodyError is describeJSONError for bodies with several fields:
// it names the field of a type error, never the value.
func describeBodyError(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return fmt.Sprintf("%q must be a %s", typ.Field, typ.Type)
	}
	return describeJSONError(err)
}

// pageHostsOf is the page hosts the request's API key may sign for; nil:
// any.
func (a *api) pageHostsOf(r *http.Request) map[string]bool {
	name := reqOf(r).key
	if name == "" {
		return nil
	}
	keys := a.auth.Load().keys
	i := slices.IndexFunc(keys, func(k key) bool { return k.name == name })
	if i < 0 { // reloaded away since it authenticated: it may sign for no host
		return map[string]bool{}
	}
	return keys[i].pageHosts
}

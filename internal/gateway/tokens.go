package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// maxStableBody bounds a stable_token request body: the real one is ~150
// bytes.
const maxStableBody = 64 << 10

// authorize checks the credential secret presents for appID, in WeChat's
// order and with WeChat's codes: 40002 bad grant_type, 41002 no appid,
// 41004 no secret, 40013 unknown appid, 40125 wrong secret. It returns the
// app, or false after answering.
func (g *Gateway) authorize(w http.ResponseWriter, ex *exchange, grantType, appID, secret string, needGrant bool) (*appEntry, bool) {
	switch {
	case needGrant && grantType != "client_credential":
		g.fail(w, ex, 40002, "bad_grant_type", "invalid grant_type")
		return nil, false
	case appID == "":
		g.fail(w, ex, 41002, "no_appid", "appid missing")
		return nil, false
	case secret == "":
		g.fail(w, ex, 41004, "no_secret", "appsecret missing")
		return nil, false
	}
	app := g.apps[appID]
	if app == nil {
		g.fail(w, ex, 40013, "unknown_appid", "invalid appid")
		return nil, false
	}
	ex.app = app.id
	name, ok := g.credentialFor(app, secret)
	if !ok {
		g.fail(w, ex, 40125, "bad_credential", "invalid appsecret: not a gateway credential allowed for this appid")
		return nil, false
	}
	ex.cred = name
	return app, true
}

// credentialFor finds the credential secret is, allowed for app, comparing
// against every credential (and the AppSecret when accepted) whatever
// matched, in constant time, so timing says nothing about which matched or
// how much of it did.
func (g *Gateway) credentialFor(app *appEntry, secret string) (name string, ok bool) {
	h := sha256.Sum256([]byte(secret))
	match := -1
	for i := range g.creds {
		if subtle.ConstantTimeCompare(h[:], g.creds[i].hash[:]) == 1 {
			match = i
		}
	}
	isSecret := app.secret != "" && subtle.ConstantTimeCompare(h[:], app.secretHash[:]) == 1
	switch {
	case match >= 0:
		c := &g.creds[match]
		return c.name, c.all || c.apps[app.id]
	case isSecret && g.acceptSecret:
		return "app-secret", true
	}
	return "", false
}

// credentialByKey finds the credential a Bearer key is (any app).
func (g *Gateway) credentialByKey(key string) *credential {
	h := sha256.Sum256([]byte(key))
	match := -1
	for i := range g.creds {
		if subtle.ConstantTimeCompare(h[:], g.creds[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return nil
	}
	return &g.creds[match]
}

// serveToken is GET /cgi-bin/token.
func (g *Gateway) serveToken(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		g.fail(w, ex, 43001, "method", "require GET method")
		return
	}
	q := r.URL.Query()
	app, ok := g.authorize(w, ex, q.Get("grant_type"), q.Get("appid"), q.Get("secret"), true)
	if !ok {
		return
	}
	tok, err := g.tokens.Token(r.Context(), app.id)
	if err != nil {
		g.tokenFailure(w, ex, err)
		return
	}
	g.handOut(w, r, ex, app.id, tok)
}

type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// serveStableToken is POST /cgi-bin/stable_token. force_refresh reports the
// current token as bad through the verified Invalidate path; it is never
// sent upstream, so a caller cannot mint (and spend the 20 a day) on its
// own.
func (g *Gateway) serveStableToken(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if r.Method != http.MethodPost {
		g.fail(w, ex, 43002, "method", "require POST method")
		return
	}
	var req stableRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxStableBody+1))
	if err != nil || len(body) > maxStableBody || json.Unmarshal(body, &req) != nil {
		g.fail(w, ex, 47001, "bad_body", "data format error: want a JSON object of at most 64 KiB")
		return
	}
	app, ok := g.authorize(w, ex, req.GrantType, req.AppID, req.Secret, true)
	if !ok {
		return
	}
	tok, err := g.tokens.Token(r.Context(), app.id)
	if err != nil {
		g.tokenFailure(w, ex, err)
		return
	}
	if req.ForceRefresh {
		fresh, err := g.tokens.Invalidate(r.Context(), app.id, tok.Value)
		g.metrics.forceRefresh(err)
		if err != nil {
			g.tokenFailure(w, ex, err)
			return
		}
		tok = fresh
	}
	g.handOut(w, r, ex, app.id, tok)
}

// handOut remembers tok as handed out for appID (locally and in the
// Ledger, before the caller can use it) and answers WeChat's token reply.
func (g *Gateway) handOut(w http.ResponseWriter, r *http.Request, ex *exchange, appID string, tok tokencache.Token) {
	now := g.now()
	ex.token = tok.Value
	g.known.remember(r.Context(), appID, tok, now)
	secs := int64(tok.ExpiresIn(now) / time.Second)
	if secs < 1 {
		secs = 1
	}
	ex.errcode, ex.coded = 0, true
	writeJSON(w, `{"access_token":`+strconv.Quote(tok.Value)+`,"expires_in":`+strconv.FormatInt(secs, 10)+`}`)
}

package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
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
// app and the credential, or false after answering.
func (g *Gateway) authorize(w http.ResponseWriter, ex *exchange, grantType, appID, secret string, needGrant bool) (*appEntry, *credential, bool) {
	switch {
	case needGrant && grantType != "client_credential":
		g.fail(w, ex, 40002, "bad_grant_type", "invalid grant_type")
		return nil, nil, false
	case appID == "":
		g.fail(w, ex, 41002, "no_appid", "appid missing")
		return nil, nil, false
	case secret == "":
		g.fail(w, ex, 41004, "no_secret", "appsecret missing")
		return nil, nil, false
	}
	app := g.apps[appID]
	if app == nil {
		g.fail(w, ex, 40013, "unknown_appid", "invalid appid")
		return nil, nil, false
	}
	ex.app = app.id
	c := g.credentialFor(app, secret)
	if c == nil {
		g.fail(w, ex, 40125, "bad_credential", "invalid appsecret: not a gateway credential allowed for this appid")
		return nil, nil, false
	}
	ex.cred = c.name
	return app, c, true
}

// appSecretName is the credential name of callers that authenticated with
// the real AppSecret (Config.AcceptAppSecret).
const appSecretName = "app-secret"

// credentialFor finds the credential secret is, allowed for app, comparing
// against every credential (and the AppSecret when accepted) whatever
// matched, in constant time, so timing says nothing about which matched or
// how much of it did. The AppSecret is a credential of app alone.
func (g *Gateway) credentialFor(app *appEntry, secret string) *credential {
	h := sha256.Sum256([]byte(secret))
	c := g.credentialByHash(h)
	isSecret := app.secret != "" && subtle.ConstantTimeCompare(h[:], app.secretHash[:]) == 1
	switch {
	case c != nil && c.allows(app.id):
		return c
	case c == nil && isSecret && g.acceptSecret:
		return app.secretCred
	}
	return nil
}

// credentialByKey finds the credential a Bearer key is (any app).
func (g *Gateway) credentialByKey(key string) *credential {
	return g.credentialByHash(sha256.Sum256([]byte(key)))
}

// credentialByHash finds the credential in force whose key has SHA-256 h,
// comparing against every one whatever matched, in constant time.
func (g *Gateway) credentialByHash(h [sha256.Size]byte) *credential {
	creds := g.credentials()
	match := -1
	for i := range creds {
		if subtle.ConstantTimeCompare(h[:], creds[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return nil
	}
	return &creds[match]
}

// credentialNamed is the credential in force named name, allowed for app
// (the AppSecret's while it is accepted); nil if it was revoked.
func (g *Gateway) credentialNamed(name, app string) *credential {
	if name == appSecretName {
		if e := g.apps[app]; e != nil && g.acceptSecret {
			return e.secretCred // nil without an AppSecret
		}
		return nil
	}
	creds := g.credentials()
	for i := range creds {
		if creds[i].name == name && creds[i].allows(app) {
			return &creds[i]
		}
	}
	return nil
}

// handlePrefix starts every token the gateway hands out.
const handlePrefix = "tkgw_"

// handle is the token the gateway hands cred for app's WeChat token: an
// HMAC of that token under the credential's key. It is the same on every
// replica (they share the keys), so a handle one replica gave is the one
// the others give; nobody without the key can make one; and each
// credential's handles are its own, so revoking a credential cuts off
// exactly the tokens it holds. WeChat's token never leaves the gateway: a
// handle is good for nothing but calls through it.
func handle(cred *credential, app, token string) string {
	m := hmac.New(sha256.New, cred.key)
	m.Write([]byte(app))
	m.Write([]byte{0})
	m.Write([]byte(token))
	return handlePrefix + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// serveToken is GET /cgi-bin/token.
func (g *Gateway) serveToken(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		g.fail(w, ex, 43001, "method", "require GET method")
		return
	}
	q := r.URL.Query()
	app, cred, ok := g.authorize(w, ex, q.Get("grant_type"), q.Get("appid"), q.Get("secret"), true)
	if !ok {
		return
	}
	tok, err := g.tokens.Token(r.Context(), app.id)
	if err != nil {
		g.tokenFailure(w, ex, err)
		return
	}
	g.handOut(w, r, ex, app.id, cred, tok)
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
	app, cred, ok := g.authorize(w, ex, req.GrantType, req.AppID, req.Secret, true)
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
	g.handOut(w, r, ex, app.id, cred, tok)
}

// handOut hands cred the handle of tok: remembered for appID and cred
// (locally and in the Ledger, before the caller can use it), in WeChat's
// token reply.
func (g *Gateway) handOut(w http.ResponseWriter, r *http.Request, ex *exchange, appID string, cred *credential, tok tokencache.Token) {
	now := g.now()
	h := handle(cred, appID, tok.Value)
	ex.token = h
	g.known.remember(r.Context(), appID, cred.name, h, tok, now)
	secs := int64(tok.ExpiresIn(now) / time.Second)
	if secs < 1 {
		secs = 1
	}
	ex.errcode, ex.coded = 0, true
	writeJSON(w, `{"access_token":`+strconv.Quote(h)+`,"expires_in":`+strconv.FormatInt(secs, 10)+`}`)
}

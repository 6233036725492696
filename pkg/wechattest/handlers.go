package wechattest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

const (
	pathToken       = wechat.EndpointToken
	pathStableToken = wechat.EndpointStableToken
	pathDomainIP    = "/cgi-bin/get_api_domain_ip"
	pathTicket      = wechat.EndpointTicket
	pathClearQuota  = "/cgi-bin/clear_quota"

	maxBodyBytes = 64 << 10
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(pathToken, s.handleToken)
	mux.HandleFunc(pathStableToken, s.handleStableToken)
	mux.HandleFunc(pathDomainIP, s.handleDomainIP)
	mux.HandleFunc(pathTicket, s.handleTicket)
	mux.HandleFunc(pathClearQuota, s.handleClearQuota)
	mux.HandleFunc(PathVerifyJSSDK, s.handleVerifyJSSDK)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&datedWriter{ResponseWriter: w, now: s.now}, r)
	})
}

// datedWriter stamps the Date header from the fake's clock when the reply
// is written, as a real server stamps it from its own: clients may order
// mints by it, and with an injected clock it must agree with the mints.
type datedWriter struct {
	http.ResponseWriter
	now   func() time.Time
	dated bool
}

func (w *datedWriter) WriteHeader(code int) {
	w.date()
	w.ResponseWriter.WriteHeader(code)
}

func (w *datedWriter) Write(b []byte) (int, error) {
	w.date()
	return w.ResponseWriter.Write(b)
}

func (w *datedWriter) date() {
	if !w.dated {
		w.dated = true
		w.Header().Set("Date", w.now().UTC().Format(http.TimeFormat))
	}
}

// Unwrap lets http.ResponseController reach the connection (lost replies
// hijack it).
func (w *datedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type reply struct {
	body []byte // always HTTP 200 JSON, like WeChat
}

func jsonReply(v any) reply {
	b, err := json.Marshal(v)
	if err != nil {
		panic("wechattest: marshal reply: " + err.Error()) // only maps of strings and ints are marshalled
	}
	return reply{body: b}
}

func errReply(code int, msg string) reply {
	return jsonReply(struct {
		Code int    `json:"errcode"`
		Msg  string `json:"errmsg"`
	}{code, msg + " rid: " + newRID()})
}

func tokenReply(value string, life time.Duration) reply {
	return jsonReply(struct {
		Token     string `json:"access_token"`
		ExpiresIn int    `json:"expires_in"`
	}{value, expiresInSeconds(life)})
}

func writeReply(w http.ResponseWriter, rep reply) {
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(rep.body)
}

// newRID imitates the request id WeChat appends to every errmsg, so
// clients learn not to match errmsg exactly.
func newRID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:]
}

// refuse counts a token-endpoint refusal and builds its reply. The errmsg
// never contains anything the caller sent: the secret must not echo.
func (s *Server) refuse(appID string, code int, msg string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countRefusedLocked(appID)
	return errReply(code, msg)
}

func (s *Server) countRefusedLocked(appID string) {
	if a, ok := s.apps[appID]; ok {
		a.stats.Refused++
		return
	}
	s.unattributed.Refused++
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	appID := q.Get("appid")
	f := s.takeFault(pathToken, appID)
	if !s.faultBefore(w, r, f, appID) {
		return
	}
	var rep reply
	if r.Method != http.MethodGet {
		rep = s.refuse(appID, 43001, "require GET method")
	} else {
		rep = s.classic(q.Get("grant_type"), appID, q.Get("secret"))
	}
	finish(w, rep, f)
}

// checkCredentials validates what both token endpoints share. Must hold
// s.mu; on refusal it has already been counted.
func (s *Server) checkCredentialsLocked(grantType, appID, secret string) (*appState, *reply) {
	refuse := func(code int, msg string) (*appState, *reply) {
		s.countRefusedLocked(appID)
		rep := errReply(code, msg)
		return nil, &rep
	}
	switch {
	case grantType != "client_credential":
		return refuse(40002, "invalid grant_type")
	case appID == "":
		return refuse(41002, "appid missing")
	case secret == "":
		return refuse(41004, "appsecret missing")
	}
	a, ok := s.apps[appID]
	if !ok {
		return refuse(40013, "invalid appid")
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(a.secret)) != 1 {
		return refuse(40125, "invalid appsecret, view more at http://t.cn/RAEkdVq")
	}
	return a, nil
}

func (s *Server) classic(grantType, appID, secret string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, refused := s.checkCredentialsLocked(grantType, appID, secret)
	if refused != nil {
		return *refused
	}
	now := s.now()
	if !s.chargeQuota(a, now) {
		a.stats.Refused++
		return errReply(45009, "reach max api daily quota limit")
	}
	previous := a.classic
	t := s.mint(appID, a, false, now)
	if previous != "" {
		s.supersede(previous, now)
	}
	return tokenReply(a.classic, t.expiresAt.Sub(now))
}

type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

func (s *Server) handleStableToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeReply(w, s.refuse(r.URL.Query().Get("appid"), 43002, "require POST method"))
		return
	}
	var req stableRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	parsed := err == nil && json.Unmarshal(body, &req) == nil
	if !parsed {
		req = stableRequest{}
	}
	f := s.takeFault(pathStableToken, req.AppID)
	if !s.faultBefore(w, r, f, req.AppID) {
		return
	}
	var rep reply
	if parsed {
		rep = s.stable(req)
	} else {
		rep = s.refuse("", 47001, "data format error")
	}
	finish(w, rep, f)
}

// stable implements the stable-token rules: one current token per app,
// replaced only in its last grace window (the old one then lives on to
// its own expiry) or by a force refresh (the old one then gets the grace
// period).
func (s *Server) stable(req stableRequest) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, refused := s.checkCredentialsLocked(req.GrantType, req.AppID, req.Secret)
	if refused != nil {
		return *refused
	}
	now := s.now()
	if req.ForceRefresh {
		if day := wechat.QuotaDay(now); a.forceDay != day {
			a.forceDay, a.forceCount = day, 0
		}
		tooSoon := a.everForced && now.Sub(a.lastForce) < StableForceMinInterval
		if !tooSoon {
			if a.forceCount >= StableForceDailyLimit {
				a.stats.Refused++
				return errReply(45009, "reach max api daily quota limit")
			}
			a.forceCount++
			a.lastForce, a.everForced = now, true
			previous := a.stable
			t := s.mint(req.AppID, a, true, now)
			if previous != "" {
				s.supersede(previous, now)
			}
			return tokenReply(a.stable, t.expiresAt.Sub(now))
		}
	}
	cur := s.tokens[a.stable]
	if cur == nil || cur.state(now) != Live || cur.expiresAt.Sub(now) <= s.cfg.grace {
		cur = s.mint(req.AppID, a, true, now)
	}
	return tokenReply(a.stable, cur.expiresAt.Sub(now))
}

// business checks an access token the way every business API does,
// counts the outcome and returns the errcode reply, or nil if the token
// is live and argsOK. A live token with bad arguments gets 40097 and is
// not counted.
func (s *Server) business(token string, argsOK bool) (appID string, refused *reply) {
	return s.businessCounted(token, argsOK, false)
}

// businessCounted is business; a check (a call that only asks whether the
// token is live, wechat.CheckHeader) is counted in Checks alone.
func (s *Server) businessCounted(token string, argsOK, check bool) (appID string, refused *reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(code int, msg string) (string, *reply) {
		rep := errReply(code, msg)
		return appID, &rep
	}
	// count records the outcome; a check counts only as a check.
	count := func(st *Stats, outcome *int) {
		if check {
			st.Checks++
		} else {
			*outcome++
		}
	}
	if token == "" {
		return fail(41001, "access_token missing")
	}
	t, ok := s.tokens[token]
	if !ok {
		count(&s.unattributed, &s.unattributed.BusinessInvalid)
		return fail(40014, "invalid access_token")
	}
	appID = t.appID
	a := s.apps[appID]
	switch t.state(s.now()) {
	case Expired:
		count(&a.stats, &a.stats.BusinessExpired)
		return fail(42001, "access_token expired")
	case Superseded:
		count(&a.stats, &a.stats.BusinessSuperseded)
		return fail(40001, "invalid credential, access_token is invalid or not latest")
	}
	if !argsOK {
		return fail(40097, "invalid args")
	}
	count(&a.stats, &a.stats.BusinessOK)
	return appID, nil
}

func (s *Server) handleDomainIP(w http.ResponseWriter, r *http.Request) {
	check := r.Header.Get(wechat.CheckHeader) != ""
	if _, refused := s.businessCounted(r.URL.Query().Get("access_token"), true, check); refused != nil {
		writeReply(w, *refused)
		return
	}
	writeReply(w, jsonReply(map[string]any{"ip_list": []string{"127.0.0.1"}}))
}

// handleClearQuota is POST /cgi-bin/clear_quota?access_token=... with
// {"appid":"..."}: a live token of that app clears its daily quota. The
// real API's 10-a-month limit is not modelled.
func (s *Server) handleClearQuota(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeReply(w, errReply(43002, "require POST method"))
		return
	}
	var req struct {
		AppID string `json:"appid"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeReply(w, errReply(47001, "data format error"))
		return
	}
	owner, refused := s.business(r.URL.Query().Get("access_token"), true)
	if refused != nil {
		writeReply(w, *refused)
		return
	}
	if req.AppID != owner {
		writeReply(w, errReply(40013, "invalid appid"))
		return
	}
	s.ResetQuota(owner)
	writeReply(w, jsonReply(map[string]any{"errcode": 0, "errmsg": "ok"}))
}

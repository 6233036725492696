package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const keyAdmin = "key-admin-0123456789abcd"

func TestAdminReloadIsAuthenticated(t *testing.T) {
	var calls int
	reloadErr := error(nil)
	e := newEnv(t, func(c *Config) {
		c.APIKeys = append(c.APIKeys, APIKey{Name: "admin", Key: keyAdmin, Apps: []string{"*"}, Admin: true})
		c.Reload = func(context.Context) error { calls++; return reloadErr }
	})
	post := func(key string) *httptest.ResponseRecorder {
		return e.do(req{method: http.MethodPost, path: RouteReload, key: key})
	}
	errorOf(t, post(""), http.StatusUnauthorized, "missing Authorization")
	errorOf(t, post(keyWrong), http.StatusUnauthorized, "invalid API key")
	errorOf(t, post(keyAll), http.StatusForbidden, `"ops" may not call admin routes`)
	if calls != 0 {
		t.Fatalf("reload ran %d times for callers without admin rights", calls)
	}
	if w := post(keyAdmin); w.Code != http.StatusOK || calls != 1 {
		t.Fatalf("admin reload: status %d, calls %d", w.Code, calls)
	}
	reloadErr = errors.New("invalid configuration: apps[0] ...")
	errorOf(t, post(keyAdmin), http.StatusUnprocessableEntity, "running configuration stays: invalid configuration")
	errorOf(t, e.do(req{path: RouteReload, key: keyAdmin}), http.StatusMethodNotAllowed, "use POST")
}

func TestAdminReloadWithoutKeysIsForbidden(t *testing.T) {
	called := false
	e := newEnv(t, func(c *Config) {
		c.APIKeys = nil
		c.Reload = func(context.Context) error { called = true; return nil }
	})
	errorOf(t, e.do(req{method: http.MethodPost, path: RouteReload}), http.StatusForbidden, "admin: true")
	if called {
		t.Fatal("an unauthenticated caller reloaded the configuration")
	}
}

func TestUpdateReplacesAppsAndKeys(t *testing.T) {
	e := newEnv(t, nil)
	h := e.h.(*Handler)
	if w := e.do(req{path: "/v1/apps/wxc/token", key: keyAll}); w.Code != http.StatusNotFound {
		t.Fatalf("wxc before update: %d", w.Code)
	}
	e.tokens.tokens["wxc"] = e.tokens.tokens["wxa"]
	const newKey = "key-new-0123456789abcdef"
	if err := h.Update([]string{"wxa", "wxc"}, []APIKey{{Name: "ops", Key: keyAll, Apps: []string{"*"}}, {Name: "new", Key: newKey, Apps: []string{"wxc"}}}); err != nil {
		t.Fatal(err)
	}
	if w := e.do(req{path: "/v1/apps/wxc/token", key: newKey}); w.Code != http.StatusOK {
		t.Fatalf("added app with added key: %d %s", w.Code, w.Body)
	}
	errorOf(t, e.do(req{path: "/v1/apps/wxb/token", key: keyAll}), http.StatusNotFound, "unknown app")
	errorOf(t, e.do(req{path: "/v1/apps/wxa/token", key: keyBackend}), http.StatusUnauthorized, "invalid API key")

	// A bad update changes nothing.
	if err := h.Update([]string{"wxa"}, []APIKey{{Name: "x", Key: "short", Apps: []string{"wxz"}}}); err == nil {
		t.Fatal("bad update accepted")
	}
	if w := e.do(req{path: "/v1/apps/wxc/token", key: newKey}); w.Code != http.StatusOK {
		t.Fatalf("after a refused update: %d", w.Code)
	}
}

func TestOpsHandlerServesOnlyOperations(t *testing.T) {
	h, err := NewOps(OpsConfig{Gatherer: prometheus.NewRegistry(), Ready: func(context.Context) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{RouteMetrics: 200, RouteHealthz: 200, RouteReadyz: 200, "/v1/apps/wxa/token": 404, RouteReload: 404} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, strings.NewReader("")))
		if w.Code != want {
			t.Errorf("%s: %d, want %d", path, w.Code, want)
		}
	}
}

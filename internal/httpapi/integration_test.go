package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/httpapi"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

var _ httpapi.Tokens = (*tokencache.Cache)(nil)

const (
	secretA = "secret-a-0123456789abcdef0123456"
	apiKey  = "api-key-0123456789abcdef"
)

type answer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Version     int64  `json:"version"`
	Error       string `json:"error"`
}

// The API over a real cache (on every backend) and the fake WeChat, through a
// real HTTP server: read, passive refresh, a repeated report of the dead
// token, and a Redis outage; nothing secret in the logs.
func TestWithRealCache(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		up, src := fleet.Upstream(t, []wechat.App{{ID: "wxa", Secret: secretA}, {ID: "wxb", Secret: secretA}})
		rdb := b.ClientWith(func(o *redis.UniversalOptions) { o.MaxRetries, o.DialTimeout = -1, 200*time.Millisecond })
		var logs testlog.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cache, err := tokencache.New(rdb, src, tokencache.WithLogger(log), tokencache.WithNearMaxAge(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cache.Close() })
		h, err := httpapi.New(httpapi.Config{
			Tokens: cache, Apps: []string{"wxa", "wxb"}, Logger: log,
			APIKeys: []httpapi.APIKey{{Name: "backend", Key: apiKey, Apps: []string{"*"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)

		call := func(method, path, body string) (int, answer) {
			t.Helper()
			req, _ := http.NewRequestWithContext(context.Background(), method, srv.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+apiKey)
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var a answer
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatalf("%s %s: body %q is not JSON", method, path, b)
			}
			return resp.StatusCode, a
		}

		status, first := call("GET", "/v1/apps/wxa/token", "")
		if status != 200 || first.AccessToken == "" || first.Version != 1 || first.ExpiresIn < 3600 {
			t.Fatalf("GET token: %d %+v; want a fresh token, version 1", status, first)
		}
		report := `{"access_token":"` + first.AccessToken + `"}`
		up.Revoke("wxa", first.AccessToken)
		status, second := call("POST", "/v1/apps/wxa/invalidate", report)
		if status != 200 || second.AccessToken == first.AccessToken || second.Version != 2 {
			t.Fatalf("invalidate: %d %+v; want a new token, version 2", status, second)
		}
		// A report of a token WeChat still accepts is answered with it, and
		// costs no fetch.
		minted := up.Stats("wxa").Minted
		if status, kept := call("POST", "/v1/apps/wxa/invalidate", `{"access_token":"`+second.AccessToken+`"}`); status != 200 || kept.AccessToken != second.AccessToken || up.Stats("wxa").Minted != minted {
			t.Fatalf("report of a live token: %d %+v; want it kept, nothing minted", status, kept)
		}
		// Another server reports the same dead token: it gets the current one,
		// and WeChat is not asked again.
		status, again := call("POST", "/v1/apps/wxa/invalidate", report)
		if status != 200 || again.AccessToken != second.AccessToken {
			t.Fatalf("second report: %d %+v; want the current token", status, again)
		}
		if n := up.Stats("wxa").Minted; n != 2 {
			t.Fatalf("WeChat minted %d tokens; want 2 (start, one passive refresh)", n)
		}

		b.Down() // Redis goes away
		// wxa's last good token is still served from memory; wxb never had
		// one, and a classic app never fetches without the lock: 503.
		if status, a := call("GET", "/v1/apps/wxa/token", ""); status != 200 || a.AccessToken != second.AccessToken {
			t.Fatalf("GET wxa with Redis down: %d %+v; want the last good token", status, a)
		}
		if status, a := call("GET", "/v1/apps/wxb/token", ""); status != http.StatusServiceUnavailable || !strings.Contains(a.Error, "token store unavailable") {
			t.Fatalf("GET wxb with Redis down: %d %+v; want 503", status, a)
		}
		if n := up.Stats("wxb").Minted; n != 0 {
			t.Fatalf("WeChat minted %d tokens for wxb during the outage; want 0", n)
		}

		out := logs.String()
		for _, s := range []string{secretA, apiKey, first.AccessToken, second.AccessToken} {
			if strings.Contains(out, s) {
				t.Fatalf("logs contain %q:\n%s", s, out)
			}
		}
		if !strings.Contains(out, wechat.Fingerprint(first.AccessToken)) {
			t.Fatalf("the invalidation was not logged by fingerprint:\n%s", out)
		}
	})
}

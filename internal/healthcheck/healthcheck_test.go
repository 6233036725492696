package healthcheck

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/httpapi"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

type noTokens struct{}

func (noTokens) Token(context.Context, string) (tokencache.Token, error) {
	return tokencache.Token{}, errors.New("not in this test")
}
func (noTokens) Invalidate(context.Context, string, string) (tokencache.Token, error) {
	return tokencache.Token{}, errors.New("not in this test")
}

// serveAPI serves the real API handler (with an API key, so /readyz is
// proven to need none) on a loopback port; ready is what its Ready says.
func serveAPI(t *testing.T, ready func(context.Context) error) string {
	t.Helper()
	h, err := httpapi.New(httpapi.Config{
		Tokens:       noTokens{},
		Apps:         []string{"wxa"},
		APIKeys:      []httpapi.APIKey{{Name: "backend", Key: wechat.Secret("health-test-key-0123456789"), Apps: []string{"*"}}},
		Ready:        ready,
		ReadyTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, err := ReadyURL(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestProbeReadyAndNotReady(t *testing.T) {
	var reason atomic.Pointer[string]
	u := serveAPI(t, func(context.Context) error {
		if r := reason.Load(); r != nil {
			return errors.New(*r)
		}
		return nil
	})
	if err := Probe(context.Background(), u, 2*time.Second); err != nil {
		t.Fatalf("ready API: %v", err)
	}
	r := "no leader elected yet"
	reason.Store(&r)
	err := Probe(context.Background(), u, 2*time.Second)
	want := "GET " + u + `: 503 Service Unavailable: "not ready: no leader elected yet"`
	if err == nil || err.Error() != want {
		t.Fatalf("not ready API: got %v, want %s", err, want)
	}
	reason.Store(nil)
	if err := Probe(context.Background(), u, 2*time.Second); err != nil {
		t.Fatalf("ready again: %v", err)
	}
}

// TestProbeTimeout: a /readyz that does not answer costs the probe its
// timeout, not the API's ReadyTimeout, and says so.
func TestProbeTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	u := serveAPI(t, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
		case <-release:
		}
		return ctx.Err()
	})
	err := Probe(context.Background(), u, 100*time.Millisecond)
	if err == nil || err.Error() != "GET "+u+": no answer within 100ms" {
		t.Fatalf("got %v", err)
	}
}

func TestProbeNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u, _ := ReadyURL(addr)
	err = Probe(context.Background(), u, time.Second)
	if err == nil || !strings.Contains(err.Error(), "GET "+u+": no answer: ") || !strings.Contains(err.Error(), "connection refused") ||
		!strings.HasSuffix(err.Error(), "(is the refresher running and listening there?)") {
		t.Fatalf("got %v", err)
	}
}

// TestProbeNotARefresher: a 404, a redirect (not followed) and a 200
// elsewhere are told apart, and a hostile body is bounded and cleaned.
func TestProbeNotARefresher(t *testing.T) {
	var followed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/moved/readyz", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { followed.Store(true) })
	mux.HandleFunc("/hostile/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("\x1b[2J" + strings.Repeat("x\n", 1<<20)))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	err := Probe(context.Background(), srv.URL+"/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "404 Not Found") || !strings.HasSuffix(err.Error(), "(is this a refresher's listener?)") {
		t.Errorf("404: %v", err)
	}
	err = Probe(context.Background(), srv.URL+"/moved/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "302 Found") || followed.Load() {
		t.Errorf("redirect: %v (followed: %v)", err, followed.Load())
	}
	err = Probe(context.Background(), srv.URL+"/hostile/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "500 Internal Server Error") || len(err.Error()) > MaxBody+200 ||
		strings.ContainsAny(err.Error(), "\x1b\n") {
		t.Errorf("hostile body: %d bytes: %.200q", len(err.Error()), err)
	}
}

func TestReadyURL(t *testing.T) {
	for listen, want := range map[string]string{
		"0.0.0.0:8080":   "http://127.0.0.1:8080/readyz",
		":8080":          "http://127.0.0.1:8080/readyz",
		"[::]:9090":      "http://[::1]:9090/readyz",
		"127.0.0.1:8081": "http://127.0.0.1:8081/readyz",
		"[::1]:8081":     "http://[::1]:8081/readyz",
		"10.0.0.7:8080":  "http://10.0.0.7:8080/readyz",
	} {
		if got, err := ReadyURL(listen); err != nil || got != want {
			t.Errorf("ReadyURL(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
	for _, bad := range []string{"", "8080", "127.0.0.1", "127.0.0.1:", "http://127.0.0.1:8080"} {
		if got, err := ReadyURL(bad); err == nil {
			t.Errorf("ReadyURL(%q) = %q, want an error", bad, got)
		}
	}
}

func TestProbeRejectsBadTimeout(t *testing.T) {
	if err := Probe(context.Background(), "http://127.0.0.1:1/readyz", 0); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Fatalf("got %v", err)
	}
}

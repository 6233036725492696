// Package healthcheck is `refresher health`: one GET of a running
// refresher's /readyz, for container healthchecks where there is no curl
// (the production image is distroless).
//
// It guarantees a bounded probe (one request, a timeout, redirects not
// followed, at most MaxBody bytes of the answer read) and an error that
// says what was asked and what came back. It does not judge readiness
// itself: /readyz does (internal/httpapi, internal/refresher); 200 is
// ready and anything else is not.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/tokenkeeper/tokenkeeper/internal/httpapi"
)

// MaxBody bounds how much of /readyz's answer is read and quoted.
const MaxBody = 1 << 10

// ReadyURL is the URL of /readyz for a refresher listening on listen
// (http.addr): an unspecified host (0.0.0.0, ::, empty) is probed on the
// loopback address of the same family, since the probe runs next to the
// refresher (same container or pod).
func ReadyURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		return "", fmt.Errorf("address %q is not host:port (e.g. 127.0.0.1:8080 or :8080)", listen)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: httpapi.RouteReadyz}
	return u.String(), nil
}

// Probe GETs readyURL once, within timeout, and returns nil if it answered
// 200. Otherwise the error names the URL and says whether there was no
// answer (and why) or which status and message came back.
func Probe(ctx context.Context, readyURL string, timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("timeout %v: must be positive", timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", readyURL, err)
	}
	client := &http.Client{
		// A redirect is not the refresher's /readyz: report it, don't follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		// No proxy from the environment: the target is this host.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("GET %s: no answer within %v", readyURL, timeout)
		}
		return fmt.Errorf("GET %s: no answer: %v (is the refresher running and listening there?)", readyURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg := answer(body)
	hint := ""
	switch resp.StatusCode {
	case http.StatusServiceUnavailable:
	case http.StatusNotFound:
		hint = " (is this a refresher's listener?)"
	default:
		hint = " (not an answer /readyz gives)"
	}
	if msg == "" {
		return fmt.Errorf("GET %s: %s%s", readyURL, resp.Status, hint)
	}
	return fmt.Errorf("GET %s: %s: %q%s", readyURL, resp.Status, msg, hint)
}

// answer is the message of an error body: the "error" field of the JSON
// the API writes, else the text itself, printable runes only.
func answer(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	s := string(body)
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		s = e.Error
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	return strings.TrimSpace(s)
}

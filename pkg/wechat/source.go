package wechat

import (
	"context"
	"fmt"
	"sort"
	"strconv"
)

// App is one WeChat app's credentials and the endpoint its tokens come from.
type App struct {
	ID     string
	Secret Secret
	Mode   Mode
}

// Source fetches tokens for a fixed set of apps, each from the endpoint its
// Mode names. It is immutable after NewSource and safe for concurrent use.
// It never forces a stable-token refresh: that is an operator's decision
// (call Client.StableToken with forceRefresh).
type Source struct {
	client *Client
	apps   map[string]App
}

// NewSource validates apps and returns a Source for them. It refuses a nil
// client, an empty or duplicate appid, an appid with spaces or control
// characters, an empty secret and an unknown mode; its errors match ErrConfig
// and never contain a secret.
func NewSource(c *Client, apps ...App) (*Source, error) {
	if c == nil {
		return nil, &ConfigError{Reason: "NewSource: nil *Client"}
	}
	s := &Source{client: c, apps: make(map[string]App, len(apps))}
	for i, app := range apps {
		where := "app #" + strconv.Itoa(i)
		switch {
		case app.ID == "":
			return nil, &ConfigError{Reason: where + ": empty appid"}
		case checkTokenValue(app.ID) != "":
			return nil, &ConfigError{Reason: where + ": appid " + checkTokenValue(app.ID)}
		case app.Secret == "":
			return nil, &ConfigError{AppID: app.ID, Reason: where + ": empty secret"}
		case app.Mode != Classic && app.Mode != Stable:
			return nil, &ConfigError{AppID: app.ID, Reason: where + ": unknown mode " + strconv.Itoa(int(app.Mode))}
		}
		if _, dup := s.apps[app.ID]; dup {
			return nil, &ConfigError{AppID: app.ID, Reason: where + ": duplicate appid"}
		}
		s.apps[app.ID] = app
	}
	return s, nil
}

// Fetch fetches a token for appID: ClassicToken for a Classic app,
// StableToken without force_refresh for a Stable one. An appID the Source
// does not know is a *ConfigError (ErrConfig).
func (s *Source) Fetch(ctx context.Context, appID string) (Token, error) {
	app, ok := s.apps[appID]
	if !ok {
		return Token{}, &ConfigError{AppID: appID, Reason: "unknown appid"}
	}
	if app.Mode == Stable {
		return s.client.StableToken(ctx, app.ID, app.Secret, false)
	}
	return s.client.ClassicToken(ctx, app.ID, app.Secret)
}

// Mode returns appID's mode. An unknown appID reports Classic, the mode
// whose fetches invalidate tokens, so a caller that skipped the check errs
// on the careful side; Fetch refuses it anyway.
func (s *Source) Mode(appID string) Mode { return s.apps[appID].Mode }

// Has reports whether the Source knows appID.
func (s *Source) Has(appID string) bool {
	_, ok := s.apps[appID]
	return ok
}

// AppIDs returns the known appids, sorted.
func (s *Source) AppIDs() []string {
	ids := make([]string, 0, len(s.apps))
	for id := range s.apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Format prints the appids and modes only. Without it, fmt would print the
// secrets: it cannot call Secret's own formatting through unexported fields.
// A value receiver, so that a copied Source value is covered too.
func (s Source) Format(f fmt.State, verb rune) {
	fmt.Fprint(f, "wechat.Source{")
	for i, id := range s.AppIDs() {
		if i > 0 {
			fmt.Fprint(f, " ")
		}
		fmt.Fprintf(f, "%s:%s", id, s.apps[id].Mode)
	}
	fmt.Fprint(f, "}")
}

package config_test

import (
	"strings"
	"testing"
)

func TestTicketsPerApp(t *testing.T) {
	yaml := strings.Replace(validYAML, "    mode: classic\n", "    mode: classic\n    tickets: [jsapi, wx_card]\n", 1)
	yaml = strings.Replace(yaml, `      apps: ["wx0000000000000001"]`+"\n", `      apps: ["wx0000000000000001"]`+"\n      page_hosts: [M.Example.com]\n", 1)
	c, err := load(t, yaml, "WX2_SECRET=s2", "TOKENKEEPER_APPS_WX0000000000000002_TICKETS=jsapi")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Apps[0].Tickets, ","); got != "jsapi,wx_card" {
		t.Errorf("wx1 tickets %q, want jsapi,wx_card from the file", got)
	}
	if got := strings.Join(c.Apps[1].Tickets, ","); got != "jsapi" {
		t.Errorf("wx2 tickets %q, want jsapi from TOKENKEEPER_APPS_WX0000000000000002_TICKETS", got)
	}
	if got := strings.Join(c.HTTP.APIKeys[0].PageHosts, ","); got != "m.example.com" {
		t.Errorf("page hosts %q, want m.example.com (lower-cased)", got)
	}
	if len(c.UnusedEnv) != 0 {
		t.Errorf("unused env %v", c.UnusedEnv)
	}
}

func TestTicketsPerAppValidated(t *testing.T) {
	for env, want := range map[string]string{
		"TOKENKEEPER_APPS_WX0000000000000001_TICKETS=jsapi,card":             `unknown ticket kind "card"`,
		"TOKENKEEPER_APPS_WX0000000000000001_TICKETS=jsapi,jsapi":            `ticket kind "jsapi" listed twice`,
		"TOKENKEEPER_HTTP_API_KEYS_BACKEND_PAGE_HOSTS=https://m.example.com": "want a bare host name",
	} {
		_, err := load(t, validYAML, "WX2_SECRET=s2", env)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", env, err, want)
		}
	}
}

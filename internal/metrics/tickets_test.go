package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

func TestTicketMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewTicketMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Kind: "jsapi", Result: "ok"})
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Kind: "jsapi", Result: "token_invalid"})
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Kind: "wx_card", Result: "no-such-result"})
	m.SetSource(func() []TicketGauge {
		return []TicketGauge{{AppID: "wxa", Kind: "jsapi", HasTicket: true, UsableFor: 90 * time.Second}, {AppID: "wxa", Kind: "wx_card", UsableFor: time.Hour}}
	})
	want := `
# HELP tokenkeeper_ticket_fetches_total getticket calls sent by this process, by app, kind (jsapi, wx_card) and result (as tokenkeeper_fetches_total).
# TYPE tokenkeeper_ticket_fetches_total counter
tokenkeeper_ticket_fetches_total{app="wxa",kind="jsapi",result="ok"} 1
tokenkeeper_ticket_fetches_total{app="wxa",kind="jsapi",result="token_invalid"} 1
tokenkeeper_ticket_fetches_total{app="wxa",kind="wx_card",result="other"} 1
# HELP tokenkeeper_ticket_usable_seconds Usable life left of the app's current ticket of the kind (0 when it has none).
# TYPE tokenkeeper_ticket_usable_seconds gauge
tokenkeeper_ticket_usable_seconds{app="wxa",kind="jsapi"} 90
tokenkeeper_ticket_usable_seconds{app="wxa",kind="wx_card"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if _, err := NewTicketMetrics(reg); err == nil {
		t.Error("registering twice must fail")
	}
}

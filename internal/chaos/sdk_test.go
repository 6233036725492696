package chaos

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/gateway"
)

// TestSDKCallerTellsTheGatewaysRefusalFromADeadCall drives one SDK
// goroutine against a stand-in gateway: a 40001 the gateway answers itself
// (its header) is a refetch and retry, not a dead call; a 40001 relayed
// from the upstream is a dead call, reported with the reader's; a gateway
// that does not answer is skipped for the next one.
func TestSDKCallerTellsTheGatewaysRefusalFromADeadCall(t *testing.T) {
	var fetches, business atomic.Int64
	var mode atomic.Value // "ok", "refuse-once", "dead"
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cgi-bin/token" {
			if r.URL.Query().Get("secret") != "the-credential" {
				_, _ = w.Write([]byte(`{"errcode":40125,"errmsg":"bad"}`))
				return
			}
			n := fetches.Add(1)
			_, _ = w.Write([]byte(`{"access_token":"tok-` + string(rune('a'+n)) + `","expires_in":60}`))
			return
		}
		business.Add(1)
		switch mode.Load() {
		case "refuse-once":
			mode.Store("ok")
			w.Header().Set(gateway.HeaderGateway, "unknown_token")
			_, _ = w.Write([]byte(`{"errcode":40001,"errmsg":"not handed out here"}`))
		case "dead":
			_, _ = w.Write([]byte(`{"errcode":40001,"errmsg":"invalid credential"}`))
		default:
			_, _ = w.Write([]byte(`{"errcode":0,"errmsg":"ok"}`))
		}
	}))
	defer srv.Close()
	// A gateway that refuses connections: a killed replica.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()

	var st sdkState
	rs := &readerState{id: 3, errors: map[string]int64{}, spans: map[string]Span{}, announced: map[string]announcement{}}
	c := newSDKCaller([]string{down, srv.URL}, 0, "the-credential", srv.Client(), &st, rs)
	ctx := context.Background()

	if ok, cause := c.call(ctx, "wxa"); !ok {
		t.Fatalf("first call: %s", cause)
	}
	if ok, _ := c.call(ctx, "wxa"); !ok || fetches.Load() != 1 {
		t.Fatalf("a second call fetched again (%d fetches): the SDK keeps its token until expires_in", fetches.Load())
	}
	mode.Store("refuse-once")
	if ok, cause := c.call(ctx, "wxa"); !ok {
		t.Fatalf("after the gateway's own refusal: %s, want a refetch and a successful retry", cause)
	}
	got := st.counts()
	if got.RefusedHere != 1 || got.Dead != 0 || got.Fetches != 2 || got.Retried != 1 || got.RetriedOK != 1 || len(rs.dead) != 0 {
		t.Fatalf("after a refusal by the gateway: %+v, dead %v; want 1 refused here, 0 dead, 2 fetches, 1 retry ok", got, rs.dead)
	}
	if got.Failovers == 0 {
		t.Errorf("no fail-over counted, yet every other request went to a gateway that refuses connections")
	}
	mode.Store("dead")
	if ok, _ := c.call(ctx, "wxa"); ok {
		t.Fatal("a call the upstream answered 40001 twice counted as ok")
	}
	got = st.counts()
	if got.Dead != 2 || len(rs.dead) != 2 || rs.dead[0].Via != "gateway" || rs.dead[0].Reader != 3 || rs.dead[0].App != "wxa" {
		t.Fatalf("dead calls relayed from the upstream: %+v, reported %+v; want 2, reported by reader 3 via the gateway", got, rs.dead)
	}
	if strings.Contains(rs.dead[0].Token, "tok-") {
		t.Errorf("the dead call reports the token %q itself, want its fingerprint", rs.dead[0].Token)
	}
	if got.violations(true) != nil {
		t.Errorf("violations %v with ok calls", got.violations(true))
	}
	if v := (GatewayCounts{}).violations(true); len(v) != 1 {
		t.Errorf("no successful gateway call is not flagged: %v", v)
	}
}

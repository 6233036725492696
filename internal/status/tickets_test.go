package status

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func TestStatusShowsTickets(t *testing.T) {
	mr := miniredis.RunT(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", "status-secret-1"), wechattest.WithApp("wx2", "status-secret-2"))
	cfg, err := config.Load(config.Options{File: "(test)", Environ: []string{}, YAML: []byte(`
redis: {addrs: ["` + mr.Addr() + `"]}
wechat: {base_url: "` + fake.URL() + `"}
apps:
  - {id: wx1, secret: status-secret-1, tickets: [jsapi, wx_card]}
  - {id: wx2, secret: status-secret-2}
cache: {key_prefix: "st:"}
lease: {name: "st:leader"}
`)})
	if err != nil {
		t.Fatal(err)
	}
	cache, client, err := backend.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer cache.Close()
	tickets, err := backend.NewTickets(cfg, client, cache)
	if err != nil {
		t.Fatal(err)
	}
	defer tickets.Close()
	ctx := context.Background()
	tk, err := tickets.Ticket(ctx, "wx1", wechat.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	mr.Set(tokencache.RecordKey(tokencache.TicketKeyPrefix("st:", wechat.TicketWxCard), "wx1"), "garbage")
	rep, err := Gather(ctx, cfg, client, cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tickets) != 2 || !rep.Tickets[0].Has || rep.Tickets[0].Ticket.Value != tk.Value || !errors.Is(rep.Tickets[1].Err, tokencache.ErrCorruptRecord) {
		t.Fatalf("tickets %+v: want wx1's jsapi ticket and its corrupt wx_card record (wx2 keeps none)", rep.Tickets)
	}
	var b bytes.Buffer
	now := time.Now()
	if err := rep.Write(&b, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	want := strings.Join([]string{"wx1", "jsapi", wechat.Fingerprint(tk.Value), "1", tk.ExpiresIn(now).Truncate(time.Second).String()}, " ")
	found := false
	for _, l := range strings.Split(out, "\n") {
		found = found || strings.Join(strings.Fields(l), " ") == want
	}
	if !strings.Contains(out, "APP  TICKET   FINGERPRINT") || !found || !strings.Contains(out, "wx1  wx_card  error: tokencache: corrupt record") {
		t.Errorf("status:\n%s\nwant a ticket table with the line %q", out, want)
	}
	if strings.Contains(out, tk.Value) {
		t.Error("status shows a whole ticket")
	}
}

package tokencmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/tokencmd"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

func TestTicket(t *testing.T) {
	cfg, fake := setup(t, "tokencmd-secret-right")
	ctx := context.Background()
	for _, kind := range wechat.TicketKinds() {
		var out bytes.Buffer
		for range 2 { // the second process reads what the first stored
			if err := tokencmd.Ticket(ctx, cfg, "wx1", kind, &out); err != nil {
				t.Fatal(err)
			}
		}
		dec := json.NewDecoder(&out)
		var r1, r2 tokencmd.TicketReply
		if dec.Decode(&r1) != nil || dec.Decode(&r2) != nil {
			t.Fatalf("output %q", out.String())
		}
		if r1.Ticket != fake.CurrentTicket("wx1", kind) || r2 != r1 && r2.Ticket != r1.Ticket || r1.ExpiresIn < 7000 || r1.Version != 1 {
			t.Errorf("%s: %+v then %+v", kind, r1, r2)
		}
		if n := fake.TicketsMinted("wx1", kind); n != 1 {
			t.Errorf("%s: %d minted for two reads, want 1", kind, n)
		}
	}
	if n := fake.Stats("wx1").Minted; n != 1 {
		t.Errorf("%d access tokens minted, want 1", n)
	}
	err := tokencmd.Ticket(ctx, cfg, "wx1", "card", &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "unknown ticket kind") {
		t.Errorf("unknown kind: %v", err)
	}
}

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTicketUsage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("redis: {addrs: [\"127.0.0.1:1\"]}\napps: [{id: wx0000000000000001, secret: cli-ticket-secret-0123}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ticket"}, "ticket takes 2 argument(s), got 0"},
		{[]string{"ticket", "wx0000000000000001", "jsapi", "x"}, "ticket takes 2 argument(s), got 3"},
		{[]string{"ticket", "wx0000000000000001", "card", "--config", file}, `unknown ticket kind "card"`},
		{[]string{"ticket", "wxnone", "--config", file}, "wxnone"},
	} {
		code, out, errOut := run(t, nil, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d, out %q, err %q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if _, _, help := run(t, nil, "--help"); !strings.Contains(help, "refresher ticket APPID [jsapi|wx_card]") {
		t.Error("help does not list the ticket command")
	}
}

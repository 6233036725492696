package main

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsTwoReplicasUnderReadLoad: the binary's SIGHUP re-reads
// the config file. Two replicas serve readers of wxa while wxb is removed
// (then served by neither) and a bad file is refused (nothing changes); no
// read of wxa fails meanwhile.
func TestSIGHUPReloadsTwoReplicasUnderReadLoad(t *testing.T) {
	f := newFleet(t, 2, time.Minute)
	for i := range 2 {
		f.start(i)
	}
	for i := range 2 {
		if !pollUntil(10*time.Second, 50*time.Millisecond, func() bool { return httpStatus(f.url(i, "/readyz")) == http.StatusOK }) {
			t.Fatalf("replica %d not ready", i)
		}
	}

	var reads, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			for n := 0; n < 3000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				code, tr, err := call(http.MethodGet, f.url(i, "/v1/apps/wxa/token"), testAPIKey, "")
				reads.Add(1)
				if err != nil || code != http.StatusOK || tr.AccessToken == "" {
					failed.Add(1)
				}
			}
		})
	}

	rewrite := func(edit func(string) string) {
		t.Helper()
		for i := range 2 {
			data, err := os.ReadFile(f.configs[i])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.configs[i], []byte(edit(string(data))), 0o600); err != nil {
				t.Fatal(err)
			}
			f.procs[i].signal(t, syscall.SIGHUP)
		}
	}
	const wxbLine = "  - {id: wxb, secret: "
	rewrite(func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, wxbLine) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	})
	for i := range 2 {
		if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool {
			code, _, _ := call(http.MethodGet, f.url(i, "/v1/apps/wxb/token"), testAPIKey, "")
			return code == http.StatusNotFound
		}) {
			t.Fatalf("replica %d still serves the removed wxb after SIGHUP", i)
		}
	}

	// An AppSecret pasted where an appid goes: refused, the running
	// configuration stays, the value is not echoed.
	const pasted = "0123456789abcdef0123456789abcdef"
	rewrite(func(s string) string {
		return strings.Replace(s, "apps:\n", "apps:\n  - {id: '"+pasted+"', secret: x}\n", 1)
	})
	for i := range 2 {
		p := f.procs[i]
		if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(p.stderr.String(), "reload refused") }) {
			t.Fatalf("replica %d did not refuse the bad file", i)
		}
		if strings.Contains(p.stderr.String(), pasted[:12]) {
			t.Fatalf("replica %d logged the pasted value", i)
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || reads.Load() == 0 {
		t.Fatalf("%d of %d reads of wxa failed during the reloads", failed.Load(), reads.Load())
	}
	t.Logf("%d reads of wxa across two replicas and four reloads, none failed", reads.Load())
}

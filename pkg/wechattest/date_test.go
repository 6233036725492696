package wechattest_test

import (
	"net/http"
	"testing"
	"time"
)

// The Date header comes from the fake's clock, as a real server's comes from
// its own: clients order mints by it.
func TestDateHeaderFollowsTheFakeClock(t *testing.T) {
	fake, clock := newFake(t)
	clock.Advance(90 * time.Minute)
	resp, err := http.Get(classicURL(fake.URL(), testApp, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got, err := http.ParseTime(resp.Header.Get("Date"))
	if want := start.Add(90 * time.Minute); err != nil || !got.Equal(want) {
		t.Fatalf("Date = %q (%v), want %v", resp.Header.Get("Date"), err, want)
	}
}

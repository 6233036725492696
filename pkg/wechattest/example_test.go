package wechattest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// In a test, one line starts the fake; it stops when the test ends.
func ExampleNew() {
	testMyCache := func(t *testing.T) {
		fake := wechattest.New(t, wechattest.WithApp("wx0123456789", "app-secret"))

		baseURL := fake.URL() // give this to the client under test instead of https://api.weixin.qq.com
		_ = baseURL
		// ... run the code under test, then assert on what WeChat saw:
		if got := fake.Stats("wx0123456789").Minted; got > 1 {
			t.Errorf("the cache fetched %d tokens, want at most 1", got)
		}
	}
	_ = testMyCache
}

// Outside a test (a demo, a tool), NewServer starts the same fake and the
// caller closes it.
func ExampleNewServer() {
	fake := wechattest.NewServer(wechattest.WithApp("wx0123456789", "app-secret"))
	defer fake.Close()

	resp, err := http.Get(fake.URL() + "/cgi-bin/token?grant_type=client_credential&appid=wx0123456789&secret=app-secret")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.AccessToken == fake.CurrentToken("wx0123456789"), tok.ExpiresIn)
	fmt.Println(fake.Stats("wx0123456789").Minted)
	// Output:
	// true 7200
	// 1
}

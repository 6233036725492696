package fleet

import (
	"testing"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Upstream is a fake WeChat that knows apps, each by its secret (then
// fakeOpts), and a wechat.Source for them on it: the "fake WeChat" half of
// every cache fixture.
func Upstream(t testing.TB, apps []wechat.App, fakeOpts ...wechattest.Option) (*wechattest.Server, *wechat.Source) {
	t.Helper()
	opts := make([]wechattest.Option, 0, len(apps)+len(fakeOpts))
	for _, a := range apps {
		opts = append(opts, wechattest.WithApp(a.ID, string(a.Secret)))
	}
	fake := wechattest.New(t, append(opts, fakeOpts...)...)
	return fake, SourceOn(t, fake, apps...)
}

// SourceOn is a wechat.Source for apps that fetches from fake (whose apps
// and secrets the caller chose: a wrong secret is a test of its own).
func SourceOn(t testing.TB, fake *wechattest.Server, apps ...wechat.App) *wechat.Source {
	t.Helper()
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(fake.URL())), apps...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

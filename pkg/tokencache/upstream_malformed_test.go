package tokencache

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// An upstream token the record cannot hold (a '|' is the record's
// separator) is a malformed upstream reply, classed transient like every
// other: it used to be a bare ErrMalformedReply that matched no class, so
// the HTTP API answered 500 and the scheduler could not tell what it was.
func TestUpstreamTokenWithSeparatorIsAMalformedReply(t *testing.T) {
	f := newFixture(t)
	f.src.prefix = "abc|def-"
	_, err := f.cache.Token(context.Background(), "wx1")
	var re *wechat.ReplyError
	if !errors.As(err, &re) || !errors.Is(err, wechat.ErrMalformedReply) || wechat.ClassName(err) != "transient" {
		t.Fatalf("err = %v (class %s), want a *wechat.ReplyError classed transient", err, wechat.ClassName(err))
	}
	if re.Endpoint != wechat.EndpointToken || !strings.Contains(re.Reason, "'|' at offset 3") {
		t.Errorf("reply error %+v: want the endpoint and the offending byte's offset", re)
	}
	if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "def-tok") {
		t.Errorf("the error shows the token: %v", err)
	}
	if _, err := f.m.Get("tokenkeeper:{wx1}:token"); err == nil {
		t.Error("the token reached Redis")
	}
}

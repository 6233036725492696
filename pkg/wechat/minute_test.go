package wechat

import (
	"errors"
	"fmt"
	"testing"
)

func TestMinuteLimited(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&Error{Code: 45011, Endpoint: EndpointToken}, true},
		{fmt.Errorf("fetch: %w", &Error{Code: 45011, Endpoint: EndpointStableToken}), true},
		{&Error{Code: 45011, Endpoint: EndpointDomainIP}, true},
		{&Error{Code: -1, Endpoint: EndpointToken}, false},
		{&Error{Code: 45009, Endpoint: EndpointToken}, false},
		{&RequestError{Endpoint: EndpointToken, Sent: true, Err: errors.New("reset")}, false},
		{nil, false},
	} {
		if got := MinuteLimited(tc.err); got != tc.want {
			t.Errorf("MinuteLimited(%v) = %v; want %v", tc.err, got, tc.want)
		}
		if tc.want && ClassName(tc.err) != "transient" {
			t.Errorf("ClassName(%v) = %q; a minute limit is transient", tc.err, ClassName(tc.err))
		}
	}
}

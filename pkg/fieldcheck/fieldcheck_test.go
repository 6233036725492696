package fieldcheck

import (
	"errors"
	"strings"
	"testing"
)

func TestProblemsRenderUnderTheCallersNames(t *testing.T) {
	var l List
	if l.Err("x") != nil {
		t.Fatal("an empty list is an error")
	}
	l.Add("overlap", "%v must exceed {{margin}} %v", "1m", "1m")
	l.Add("key_prefix", "must contain no '{' or '}'")
	err := l.Err("tokencache: invalid config")
	var fe *Error
	if !errors.As(err, &fe) || len(fe.Problems) != 2 {
		t.Fatalf("err = %v", err)
	}
	if got := fe.Problems[0].Text(func(f string) string { return "cache." + f }); got != "1m must exceed cache.margin 1m" {
		t.Fatalf("Text = %q", got)
	}
	if got := fe.Problems[1].Text(strings.ToUpper); got != "must contain no '{' or '}'" {
		t.Fatalf("a lone brace was taken for a name: %q", got)
	}
	if want := "tokencache: invalid config: overlap: 1m must exceed margin 1m; key_prefix: must contain no '{' or '}'"; err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
}

package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tokenkeeper/tokenkeeper"

// isTestCode says whether the package at path is test code, which the
// production binary must not link: the testing package, the embedded
// Redis, the fake WeChat, the demo built on them and the module's test
// helpers.
func isTestCode(path string) bool {
	for _, p := range []string{
		"testing",
		"net/http/httptest",
		"github.com/alicebob/miniredis",
		module + "/pkg/wechattest",
		module + "/internal/demo",
		module + "/internal/redistest",
		module + "/internal/testlog",
	} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// goListDeps is `go list -deps pkg`, run by the go command that runs the
// test (go test puts its own GOROOT/bin first in PATH), with env added.
func goListDeps(t *testing.T, env []string, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s (env %v): %v", pkg, env, err)
	}
	return strings.Fields(string(out))
}

// TestProductionBinaryLinksNoTestCode: cmd/refresher, as `go build` and as
// the Dockerfile build it, links no test code; the demo is
// cmd/refresher-demo. The demo binary does link it, which shows the check
// would see it.
func TestProductionBinaryLinksNoTestCode(t *testing.T) {
	for _, env := range [][]string{nil, {"CGO_ENABLED=0", "GOOS=linux"}} {
		deps := goListDeps(t, env, ".")
		if !slices.Contains(deps, module+"/internal/cli") {
			t.Fatalf("env %v: go list -deps . lacks internal/cli: %v", env, deps)
		}
		if bad := slices.DeleteFunc(slices.Clone(deps), func(p string) bool { return !isTestCode(p) }); len(bad) > 0 {
			t.Errorf("env %v: cmd/refresher links test code: %v (move what needs it to cmd/refresher-demo)", env, bad)
		}
	}
	demo := goListDeps(t, nil, "../refresher-demo")
	for _, want := range []string{"testing", "github.com/alicebob/miniredis/v2", module + "/pkg/wechattest", module + "/internal/demo"} {
		if !slices.Contains(demo, want) || !isTestCode(want) {
			t.Errorf("the demo binary does not link %s, or the check does not see it", want)
		}
	}
	if isTestCode("internal/testlog") { // the standard library's, which os imports
		t.Error("the check mistakes the standard library's internal/testlog for test code")
	}
}

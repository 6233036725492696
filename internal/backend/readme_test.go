package backend_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// The README quotes the ACL rule for the default configuration; it must be
// the one ACLSetUser builds.
func TestREADMEQuotesTheACLRule(t *testing.T) {
	cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte("apps: [{id: wx0000000000000001, secret: s}]\n"), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(backend.ACLSetUser(cfg, "tokenkeeper", "PASSWORD"), " ")
	if !strings.Contains(string(readme), "\n"+want+"\n") {
		t.Fatalf("README.md does not quote the ACL rule on a line of its own:\n%s", want)
	}
}

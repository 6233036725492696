package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// TestDockerignore reads ../.dockerignore with BuildKit's own reader and
// matcher and checks that the build context holds every file the images'
// builds compile (from go list, not a list here) and no secret: .env
// files, the compose secrets directory, keys and certificates, anywhere in
// the tree, are left out of the context, and so out of every image layer.
func TestDockerignore(t *testing.T) {
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	ignored := func(p string) bool {
		t.Helper()
		m, err := pm.MatchesOrParentMatches(filepath.ToSlash(p))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return m
	}

	// What the Dockerfile's two builds compile (go list in the main module).
	list := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, "./cmd/refresher", "./cmd/refresher-demo")
	list.Dir = ".."
	list.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, abs := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, abs)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("%s is outside the repository", abs)
		}
		needed = append(needed, rel)
	}
	if len(needed) < 20 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, p := range needed {
		if ignored(p) {
			t.Errorf("%s is needed by the image build but .dockerignore leaves it out", p)
		}
	}

	for _, p := range []string{
		".env", ".env.production", "cmd/refresher/.env", "deploy/.env.local",
		"secrets/wx0123456789abcdef_secret", "secrets/redis_password", "ops/secrets/app",
		"server.key", "tls/server.pem", "certs/client.p12", "deploy/kubernetes/secrets.example.yaml",
		"internal/config/config_test.go", ".git/config",
	} {
		if !ignored(p) {
			t.Errorf("%s would enter the build context", p)
		}
	}
	// And every such file actually in the tree.
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (rel == ".git" || rel == ".bin") {
			return filepath.SkipDir
		}
		base := d.Name()
		if strings.HasPrefix(base, ".env") || base == "secrets" || strings.HasSuffix(base, ".pem") || strings.HasSuffix(base, ".key") {
			if !ignored(rel) {
				t.Errorf("%s (in the tree) would enter the build context", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

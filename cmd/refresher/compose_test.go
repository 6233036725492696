package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// composeVars stands for the operator's shell when compose interpolates.
var composeVars = map[string]string{
	"WXDEMO1_SECRET": "compose-test-secret",
	"API_KEY":        "compose-test-api-key-0123456789",
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate applies compose's ${VAR}, ${VAR:-default} and ${VAR:?msg}.
func interpolate(s string) string {
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		g := interpolation.FindStringSubmatch(m)
		if v, ok := composeVars[g[1]]; ok && v != "" {
			return v
		}
		if strings.HasSuffix(g[2], "-") {
			return g[3]
		}
		return ""
	})
}

type composeFile struct {
	Services map[string]struct {
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Profiles    []string          `yaml:"profiles"`
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"` // "." or {context, target}
	} `yaml:"services"`
}

// buildTarget is the Dockerfile target a service's build names ("" for
// the default, the last stage: the production image).
func buildTarget(build any) string {
	if m, ok := build.(map[string]any); ok {
		t, _ := m["target"].(string)
		return t
	}
	return ""
}

// TestComposeFile checks docker-compose.yml without a Docker engine: every
// TOKENKEEPER_ variable a service sets is one the refresher reads (the
// set comes from internal/config's loader, not from a list here), each
// replica's environment alone is a valid configuration reachable from
// outside its container, identities differ, and the demo profile runs
// serve --demo from the Dockerfile's demo target (cmd/refresher-demo),
// under an image name of its own: the production image has no demo.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	var replicas []string
	identities := map[string]string{}
	images := map[string]string{} // image -> "demo" or "production"
	for name, svc := range cf.Services {
		if !slices.Contains(svc.Command, "serve") {
			continue
		}
		if slices.Contains(svc.Command, "--demo") {
			if !slices.Contains(svc.Profiles, "demo") {
				t.Errorf("%s runs --demo outside the demo profile", name)
			}
			if i := slices.Index(svc.Command, "--http-addr"); i < 0 || !strings.HasPrefix(svc.Command[i+1], "0.0.0.0:") {
				t.Errorf("%s: a demo in a container must listen on 0.0.0.0 (--http-addr), got %v", name, svc.Command)
			}
			if buildTarget(svc.Build) != "demo" {
				t.Errorf("%s runs --demo but builds target %q, not the Dockerfile's demo target", name, buildTarget(svc.Build))
			}
			if images[svc.Image] == "production" {
				t.Errorf("%s: the demo's image %q is also the replicas'", name, svc.Image)
			}
			images[svc.Image] = "demo"
			continue
		}
		if buildTarget(svc.Build) != "" {
			t.Errorf("%s builds target %q, not the production image", name, buildTarget(svc.Build))
		}
		if images[svc.Image] == "demo" {
			t.Errorf("%s: the replicas' image %q is also the demo's", name, svc.Image)
		}
		images[svc.Image] = "production"
		replicas = append(replicas, name)
		var env []string
		for k, v := range svc.Environment {
			env = append(env, k+"="+interpolate(v))
		}
		c, err := config.Load(config.Options{Environ: env, ReadFile: func(string) ([]byte, error) { return []byte("file-secret-0123456789"), nil }})
		if err != nil {
			t.Errorf("%s: its environment is not a valid configuration: %v", name, err)
			continue
		}
		if len(c.UnusedEnv) > 0 {
			t.Errorf("%s sets variables the refresher never reads: %v", name, c.UnusedEnv)
		}
		for k := range svc.Environment {
			if !strings.HasPrefix(k, config.EnvPrefix) {
				t.Errorf("%s sets %s, which is not a TOKENKEEPER_ variable", name, k)
			}
		}
		for _, required := range []string{"TOKENKEEPER_REDIS_ADDRS", "TOKENKEEPER_APPS", "TOKENKEEPER_HTTP_ADDR", "TOKENKEEPER_IDENTITY", "TOKENKEEPER_HTTP_API_KEYS"} {
			if svc.Environment[required] == "" {
				t.Errorf("%s does not set %s", name, required)
			}
		}
		if !strings.HasPrefix(c.HTTP.Addr, "0.0.0.0:") {
			t.Errorf("%s: http.addr %s is unreachable from outside its container", name, c.HTTP.Addr)
		}
		if slices.Contains(c.Redis.Addrs, "127.0.0.1:6379") {
			t.Errorf("%s: Redis at 127.0.0.1 is the container itself", name)
		}
		if other, dup := identities[c.Identity]; dup {
			t.Errorf("%s and %s share the identity %q", name, other, c.Identity)
		}
		identities[c.Identity] = name
	}
	if len(replicas) != 3 {
		t.Errorf("want three refresher replicas, found %v", replicas)
	}
	if _, ok := cf.Services["redis"]; !ok {
		t.Error("no redis service")
	}
}

// TestDockerfileTargets: the default image (the last stage) is built from
// cmd/refresher alone; the demo target, which compose's demo names, from
// cmd/refresher-demo.
func TestDockerfileTargets(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]string{} // name -> its lines
	var last string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && strings.EqualFold(f[0], "FROM") {
			last = "(default)"
			if len(f) >= 4 && strings.EqualFold(f[2], "AS") {
				last = f[3]
			}
		}
		stages[last] += line + "\n"
	}
	def := stages[last]
	if last != "(default)" || !strings.Contains(def, "COPY --from=build ") || strings.Contains(def, "demo") {
		t.Errorf("the last stage is not the production image from stage build:\n%s", def)
	}
	if !strings.Contains(stages["build"], " ./cmd/refresher\n") || strings.Contains(stages["build"], "refresher-demo") {
		t.Errorf("stage build does not build ./cmd/refresher alone:\n%s", stages["build"])
	}
	if !strings.Contains(stages["demo"], "COPY --from=build-demo ") || !strings.Contains(stages["build-demo"], " ./cmd/refresher-demo\n") {
		t.Errorf("no demo target built from ./cmd/refresher-demo:\n%s%s", stages["build-demo"], stages["demo"])
	}
}

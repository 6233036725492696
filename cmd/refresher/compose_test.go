package main

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/healthcheck"
)

// composeVars stands for the operator's shell when compose interpolates.
// No secret is among them: secrets come from files (compose secrets).
var composeVars = map[string]string{}

var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate applies compose's ${VAR}, ${VAR:-default}, ${VAR:?msg} and
// $$ (a literal $).
func interpolate(s string) string {
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
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

// composeFile is the part of the Compose specification this file uses.
// It is decoded with unknown fields rejected, so a misspelt key (say
// read_onyl) fails here instead of being ignored by compose's looser
// reading; a new key needs a field here first.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Configs  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"configs"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes    map[string]any `yaml:"volumes"`
	Extensions map[string]any `yaml:",inline"` // x-* only
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           any               `yaml:"build"` // "." or {context, target}
	User            string            `yaml:"user"`
	Entrypoint      []string          `yaml:"entrypoint"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Profiles        []string          `yaml:"profiles"`
	Restart         string            `yaml:"restart"`
	ReadOnly        bool              `yaml:"read_only"`
	CapDrop         []string          `yaml:"cap_drop"`
	SecurityOpt     []string          `yaml:"security_opt"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	DependsOn       map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Secrets []string `yaml:"secrets"`
	Configs []struct {
		Source string `yaml:"source"`
		Target string `yaml:"target"`
	} `yaml:"configs"`
	Healthcheck struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	Deploy struct {
		Resources struct {
			Limits struct {
				Memory string `yaml:"memory"`
				Pids   int    `yaml:"pids"`
			} `yaml:"limits"`
		} `yaml:"resources"`
	} `yaml:"deploy"`
	Volumes []string `yaml:"volumes"`
	Ports   []string `yaml:"ports"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for k := range cf.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("docker-compose.yml: unknown top-level key %q", k)
		}
	}
	return cf
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

// memBytes parses a compose byte size ("256M", "1g", "512k", "1024b").
func memBytes(s string) (int64, error) {
	m := regexp.MustCompile(`^(\d+)([bkmg]?)$`).FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a compose byte size", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n << map[string]uint{"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[m[2]], nil
}

// secretNames are variable-name endings that carry a secret's value
// itself: such a variable must not be set, its _FILE form must.
var secretNames = regexp.MustCompile(`_(SECRET|KEY|PASSWORD)(_ENV)?$`)

// TestComposeFile checks docker-compose.yml without a Docker engine: every
// TOKENKEEPER_ variable a service sets is one the refresher reads (the
// set comes from internal/config's loader, not from a list here), each
// replica's environment alone is a valid configuration reachable from
// outside its container whose every secret (AppSecret, API key, Redis
// password) comes from a compose secret it mounts, identities differ, the
// healthcheck probes the replica's own listener, and the demo profile runs
// serve --demo from the Dockerfile's demo target (cmd/refresher-demo),
// under an image name of its own: the production image has no demo.
func TestComposeFile(t *testing.T) {
	cf := loadCompose(t)
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
			} else if port := strings.TrimPrefix(svc.Command[i+1], "0.0.0.0:"); !slices.Equal(svc.Healthcheck.Test, []string{"CMD", "/usr/local/bin/refresher-demo", "health", "--addr", "127.0.0.1:" + port}) {
				t.Errorf("%s: healthcheck %v does not probe its listener on port %s", name, svc.Healthcheck.Test, port)
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
			switch {
			case k == "GOMEMLIMIT":
				// The Go runtime's, not the refresher's: checked below.
			case !strings.HasPrefix(k, config.EnvPrefix):
				t.Errorf("%s sets %s, which is not a TOKENKEEPER_ variable", name, k)
			case secretNames.MatchString(k):
				t.Errorf("%s sets %s: a secret in the environment (docker inspect shows it); use %s_FILE and a compose secret", name, k, strings.TrimSuffix(k, "_ENV"))
			}
		}
		// Each file the configuration reads must be a compose secret this
		// service mounts; each gets its own content, so a secret read from
		// the wrong file shows.
		mounted := map[string]bool{}
		for _, s := range svc.Secrets {
			if _, ok := cf.Secrets[s]; !ok {
				t.Errorf("%s mounts secret %q, which the file does not define", name, s)
			}
			mounted["/run/secrets/"+s] = true
		}
		read := map[string]bool{}
		readFile := func(p string) ([]byte, error) {
			if !mounted[p] {
				return nil, fmt.Errorf("%s is not a mounted compose secret", p)
			}
			read[p] = true
			return []byte("content-of-" + path.Base(p) + "-0123456789"), nil
		}
		c, err := config.Load(config.Options{Environ: env, ReadFile: readFile})
		if err != nil {
			t.Errorf("%s: its environment is not a valid configuration: %v", name, err)
			continue
		}
		if len(c.UnusedEnv) > 0 {
			t.Errorf("%s sets variables the refresher never reads: %v", name, c.UnusedEnv)
		}
		fromFile := func(what, from string, got string) {
			p := strings.TrimPrefix(from, "file ")
			if !strings.HasPrefix(from, "file ") || !read[p] || got != "content-of-"+path.Base(p)+"-0123456789" {
				t.Errorf("%s: %s comes from %q, not from a mounted compose secret", name, what, from)
			}
		}
		for _, a := range c.Apps {
			fromFile("the AppSecret of "+a.ID, a.SecretFrom, a.Secret.Reveal())
		}
		for _, k := range c.HTTP.APIKeys {
			fromFile("API key "+k.Name, k.KeyFrom, k.Key.Reveal())
		}
		fromFile("the Redis password", c.Redis.PasswordFrom, c.Redis.Password.Reveal())
		if len(read) != len(mounted) {
			t.Errorf("%s mounts secrets %v but reads only %v", name, svc.Secrets, read)
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
		if c.Redis.Addrs[0] != "redis:6379" {
			t.Errorf("%s: Redis at %v, not the redis service", name, c.Redis.Addrs)
		}
		if svc.DependsOn["redis"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for a healthy redis: %+v", name, svc.DependsOn)
		}
		if other, dup := identities[c.Identity]; dup {
			t.Errorf("%s and %s share the identity %q", name, other, c.Identity)
		}
		identities[c.Identity] = name
		// The healthcheck is `refresher health` with no address: it probes
		// what the same environment gives (the listener, on loopback).
		if !slices.Equal(svc.Healthcheck.Test, []string{"CMD", "/usr/local/bin/refresher", "health"}) {
			t.Errorf("%s: healthcheck %v, want the binary's own health command", name, svc.Healthcheck.Test)
		}
		_, port, _ := strings.Cut(c.HTTP.Addr, ":")
		if u, err := healthcheck.ReadyURL(c.HTTP.Addr); err != nil || u != "http://127.0.0.1:"+port+"/readyz" {
			t.Errorf("%s: the healthcheck would probe %q (%v), not its listener", name, u, err)
		}
		limit, err := memBytes(svc.Deploy.Resources.Limits.Memory)
		goLimit := strings.TrimSuffix(svc.Environment["GOMEMLIMIT"], "MiB")
		if n, perr := strconv.ParseInt(goLimit, 10, 64); err != nil || perr != nil || n<<20 >= limit*9/10 {
			t.Errorf("%s: GOMEMLIMIT %q is not a MiB figure below 90%% of its memory limit %q", name, svc.Environment["GOMEMLIMIT"], svc.Deploy.Resources.Limits.Memory)
		}
	}
	if len(replicas) != 3 {
		t.Errorf("want three refresher replicas, found %v", replicas)
	}
	for name, s := range cf.Secrets {
		if !strings.HasPrefix(s.File, "./secrets/") {
			t.Errorf("secret %s: file %q is outside ./secrets, which .gitignore and .dockerignore keep out", name, s.File)
		}
	}
}

// TestComposeHardening: every service restarts, runs with a read-only
// root filesystem, no capabilities, no-new-privileges, a memory and a pids
// limit, a healthcheck that can fail, and as a non-root user (the
// refresher images' USER is checked by TestDockerfileTargets); no port is
// published beyond loopback, and Redis publishes none.
func TestComposeHardening(t *testing.T) {
	cf := loadCompose(t)
	if _, ok := cf.Services["redis"]; !ok {
		t.Fatal("no redis service")
	}
	for name, svc := range cf.Services {
		if svc.Restart != "unless-stopped" && svc.Restart != "always" {
			t.Errorf("%s: restart %q", name, svc.Restart)
		}
		if !svc.ReadOnly {
			t.Errorf("%s: root filesystem not read-only", name)
		}
		if !slices.Equal(svc.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: cap_drop %v, want [ALL]", name, svc.CapDrop)
		}
		if !slices.Contains(svc.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: security_opt %v lacks no-new-privileges:true", name, svc.SecurityOpt)
		}
		lim := svc.Deploy.Resources.Limits
		if n, err := memBytes(lim.Memory); err != nil || n < 64<<20 || n > 4<<30 {
			t.Errorf("%s: memory limit %q (%v), want 64M to 4G", name, lim.Memory, err)
		}
		if lim.Pids < 32 || lim.Pids > 4096 {
			t.Errorf("%s: pids limit %d, want 32 to 4096", name, lim.Pids)
		}
		hc := svc.Healthcheck
		if len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") || hc.Retries < 1 {
			t.Errorf("%s: healthcheck %+v", name, hc)
		}
		for _, d := range []string{hc.Interval, hc.Timeout} {
			if v, err := time.ParseDuration(d); err != nil || v <= 0 {
				t.Errorf("%s: healthcheck interval/timeout %q", name, d)
			}
		}
		if u := svc.User; u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") || (u == "" && name == "redis") {
			t.Errorf("%s: user %q", name, u)
		}
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond loopback", name, p)
			}
		}
		if name == "redis" && len(svc.Ports) > 0 {
			t.Errorf("redis publishes %v: only the refreshers need it", svc.Ports)
		}
		if strings.HasSuffix(svc.Image, ":latest") || (svc.Build == nil && !strings.Contains(svc.Image, ":")) {
			t.Errorf("%s: image %q is not pinned to a version", name, svc.Image)
		}
	}
}

// TestDockerfileTargets: the default image (the last stage) is built from
// cmd/refresher alone and runs it, as a non-root user, at the path the
// compose healthcheck runs; the demo target, which compose's demo names,
// from cmd/refresher-demo.
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
	for stage, bin := range map[string]string{"(default)": "/usr/local/bin/refresher", "demo": "/usr/local/bin/refresher-demo"} {
		s := stages[stage]
		if !strings.Contains(s, "\nUSER nonroot:nonroot\n") || !strings.Contains(s, ":nonroot") {
			t.Errorf("stage %s does not run as the distroless nonroot user:\n%s", stage, s)
		}
		if !strings.Contains(s, `ENTRYPOINT ["`+bin+`"]`) {
			t.Errorf("stage %s does not run %s (the compose healthcheck's path):\n%s", stage, bin, s)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// composeRedis runs the compose redis service's own entrypoint and command
// with a real redis-server: /run/secrets/NAME and each config's target
// stand for files of the test, and redis-server and redis-cli on PATH are
// wrappers that add only a loopback port and a data directory (placed
// before the command's trailing "-", so the compose file's settings and
// the stdin password apply as in the container).
type composeRedis struct {
	addr, password, dir, pathEnv string
	subst                        *strings.Replacer
	cmd                          *exec.Cmd
	out                          bytes.Buffer
}

func startComposeRedis(t *testing.T, password string) *composeRedis {
	t.Helper()
	bin := redistest.Binary(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-cli not on PATH (CI=true): %v", err)
		}
		t.Skipf("redis-cli not on PATH: %v", err)
	}
	svc := loadCompose(t).Services["redis"]
	cf := loadCompose(t)
	r := &composeRedis{dir: t.TempDir(), password: password}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r.addr = "127.0.0.1:" + strconv.Itoa(port)

	var pairs []string
	for _, s := range svc.Secrets {
		p := filepath.Join(r.dir, "secret-"+s)
		if err := os.WriteFile(p, []byte(password), 0o600); err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, "/run/secrets/"+s, p)
	}
	for _, c := range svc.Configs {
		src, err := filepath.Abs(filepath.Join("../..", cf.Configs[c.Source].File))
		if err != nil || cf.Configs[c.Source].File == "" {
			t.Fatalf("config %q: no file (%v)", c.Source, err)
		}
		pairs = append(pairs, c.Target, src)
	}
	r.subst = strings.NewReplacer(pairs...)

	wrappers := filepath.Join(r.dir, "bin")
	data := filepath.Join(r.dir, "data")
	for _, d := range []string{wrappers, data} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	scripts := map[string]string{
		"redis-server": fmt.Sprintf(`#!/bin/sh
[ "$#" = 2 ] && [ "$2" = "-" ] || { echo "unexpected redis-server arguments: $*" >&2; exit 99; }
exec %s "$1" --port %d --bind 127.0.0.1 --dir %s -
`, bin, port, data),
		"redis-cli": fmt.Sprintf("#!/bin/sh\nexec %s -p %d \"$@\"\n", cli, port),
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(wrappers, name), []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	r.pathEnv = "PATH=" + wrappers + ":" + os.Getenv("PATH")

	argv := append(append([]string{}, svc.Entrypoint...), svc.Command...)
	for i := range argv {
		argv[i] = r.subst.Replace(interpolate(argv[i]))
	}
	if len(argv) < 2 || argv[0] != "/bin/sh" {
		t.Fatalf("redis entrypoint+command %q: want a /bin/sh script", argv)
	}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Env = []string{r.pathEnv}
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("redis output:\n%s", tail(r.out.String(), 3000))
		}
	})
	c := redis.NewClient(&redis.Options{Addr: r.addr, Password: password, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	// Polling a starting process: it sends no signal to await.
	if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool { return c.Ping(context.Background()).Err() == nil }) {
		t.Fatalf("the compose redis command did not come up: %s", r.out.String())
	}
	return r
}

// healthcheck runs the service's healthcheck as Docker would (CMD-SHELL:
// /bin/sh -c) and returns its exit code.
func (r *composeRedis) healthcheck(t *testing.T) int {
	t.Helper()
	test := loadCompose(t).Services["redis"].Healthcheck.Test
	if len(test) != 2 || test[0] != "CMD-SHELL" {
		t.Fatalf("redis healthcheck %q: want CMD-SHELL and one command", test)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", r.subst.Replace(interpolate(test[1])))
	cmd.Env = []string{r.pathEnv}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatal("redis healthcheck hung")
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), r.password) {
		t.Errorf("the healthcheck printed the password")
	}
	return cmd.ProcessState.ExitCode()
}

// TestComposeRedisService starts the compose file's Redis exactly as its
// service says, on a real redis-server: a password is required (from the
// secret) and is in no process's command line, maxmemory-policy is
// noeviction, appendonly is on, maxmemory sits below the container's
// memory limit, and the healthcheck passes with the secret and fails
// without the right one.
func TestComposeRedisService(t *testing.T) {
	const password = "compose-redis-password-5f0c3a9e"
	r := startComposeRedis(t, password)
	ctx := context.Background()

	anon := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("PING without the password: %v, want NOAUTH", err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr, Password: password, MaxRetries: -1})
	defer c.Close()
	want := map[string]string{"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"}
	for k, v := range want {
		got, err := c.ConfigGet(ctx, k).Result()
		if err != nil || got[k] != v {
			t.Errorf("CONFIG GET %s = %v (%v), want %s", k, got, err, v)
		}
	}
	got, err := c.ConfigGet(ctx, "maxmemory").Result()
	maxmem, _ := strconv.ParseInt(got["maxmemory"], 10, 64)
	limit, lerr := memBytes(loadCompose(t).Services["redis"].Deploy.Resources.Limits.Memory)
	if err != nil || lerr != nil || maxmem <= 0 || maxmem > limit*8/10 {
		t.Errorf("maxmemory %d (%v), container limit %d (%v): want a maxmemory at most 80%% of the limit", maxmem, err, limit, lerr)
	}

	// The password is in no argv: the shell exec'd redis-server, which
	// read it from stdin.
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var seen bool
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(password)) {
			t.Errorf("%s holds the password: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
		if p == fmt.Sprintf("/proc/%d/cmdline", r.cmd.Process.Pid) {
			seen = bytes.Contains(b, []byte("redis-server"))
		}
	}
	if !seen {
		t.Errorf("process %d (the service's PID 1) is not redis-server: the shell did not exec it", r.cmd.Process.Pid)
	}

	if code := r.healthcheck(t); code != 0 {
		t.Errorf("healthcheck with the secret: exit %d", code)
	}
	if err := c.ConfigSet(ctx, "requirepass", "another-password-0123456789").Err(); err != nil {
		t.Fatal(err)
	}
	if code := r.healthcheck(t); code == 0 {
		t.Error("healthcheck passed although the secret is not the password")
	}
}

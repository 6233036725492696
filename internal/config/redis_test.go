package config_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// tlsFiles are a real CA, client certificate and key (made by
// redistest), which files serves at /tls/ca.crt, /tls/client.crt and
// /tls/client.key.
var tlsFiles = sync.OnceValue(func() map[string]string {
	dir, err := os.MkdirTemp("", "config-test-tls")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	p, err := redistest.WritePKI(dir)
	if err != nil {
		panic(err)
	}
	m := map[string]string{}
	for name, path := range map[string]string{"/tls/ca.crt": p.CAFile, "/tls/client.crt": p.ClientCertFile, "/tls/client.key": p.ClientKey} {
		b, err := os.ReadFile(path)
		if err != nil {
			panic(err)
		}
		m[name] = string(b)
	}
	return m
})

// checkTLSFromFiles checks c's TLS settings as envOnly gives them.
func checkTLSFromFiles(t *testing.T, c *config.Config) {
	t.Helper()
	tc := c.RedisOptions().TLSConfig
	if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "redis.internal" {
		t.Fatalf("TLS config %+v: want the CA file's pool, the client certificate and tls_server_name", tc)
	}
	lo := c.LockOptions()
	if len(lo) != 3 || lo[2].Addr != "10.0.1.3:6379" || lo[0].Username != "tk" || lo[0].Password != "redis-pw" || lo[0].TLSConfig == nil || lo[0].TLSConfig.ServerName != "redis.internal" {
		t.Fatalf("lock options %+v: want one per lock_addrs entry, with the redis section's credentials and TLS", lo)
	}
}

func TestRedisTLSAndLockProblems(t *testing.T) {
	read := files(map[string]string{"/tls/junk.pem": "not a certificate"})
	tests := []struct {
		name, redis, field, want string
	}{
		{"files without tls", `tls_ca_file: /tls/ca.crt`, "redis.tls_ca_file", "is set but redis.tls is false"},
		{"missing CA file", `tls: true, tls_ca_file: /nonexistent/ca.crt`, "redis.tls_ca_file", `cannot read "/nonexistent/ca.crt": `},
		{"CA file without PEM", `tls: true, tls_ca_file: /tls/junk.pem`, "redis.tls_ca_file", `"/tls/junk.pem" holds no PEM certificate`},
		{"cert without key", `tls: true, tls_cert_file: /tls/client.crt`, "redis.tls_cert_file", "needs both redis.tls_cert_file and redis.tls_key_file"},
		{"key that is not the cert's", `tls: true, tls_cert_file: /tls/client.crt, tls_key_file: /tls/junk.pem`, "redis.tls_cert_file", `"/tls/client.crt" and "/tls/junk.pem" are not a certificate and its key`},
		{"two lock masters", `lock_addrs: ["a:1", "b:2"]`, "redis.lock_addrs", "2 independent masters: give none (the lock and lease live in redis.addrs) or at least 3"},
		{"bad lock addr", `lock_addrs: ["a:1", "b:2", "c"]`, "redis.lock_addrs[2]", "not host:port"},
		{"lock addr twice", `lock_addrs: ["a:1", "b:2", "a:1"]`, "redis.lock_addrs[2]", `"a:1" is given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "apps: [{id: wx0000000000000001, secret: s}]\nredis: {addrs: [\"h:1\"], " + tt.redis + "}\n"
			_, err := config.Load(config.Options{File: "t.yaml", YAML: []byte(yaml), Environ: []string{}, ReadFile: read})
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v: want a *config.Error", err)
			}
			for _, p := range ce.Problems {
				if p.Field == tt.field && strings.Contains(p.Reason, tt.want) {
					if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "BEGIN") {
						t.Fatalf("the error shows file contents: %v", err)
					}
					return
				}
			}
			t.Fatalf("err %v: want %s: ...%s...", err, tt.field, tt.want)
		})
	}
}

// A Config built by hand (as demo mode and tests do) loads its TLS files
// in Validate; one never validated fails every handshake with the reason.
func TestRedisTLSOfAHandBuiltConfig(t *testing.T) {
	p := redistest.NewPKI(t)
	c, err := config.Load(config.Options{File: "t.yaml", YAML: []byte("apps: [{id: wx0000000000000001, secret: s}]\n"), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	c.Redis.TLS, c.Redis.TLSCAFile = true, p.CAFile
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if tc := c.RedisOptions().TLSConfig; tc == nil || tc.RootCAs == nil {
		t.Fatalf("TLS config %+v: want the CA file's pool", tc)
	}
	c.Redis.TLSCAFile = p.Dir + "/nonexistent.crt"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nonexistent.crt") {
		t.Fatalf("Validate: %v, want the unreadable CA file named", err)
	}
}

// A configuration loaded twice is reflect.DeepEqual to itself, TLS files
// included: a reload can tell whether the redis section changed.
func TestRedisSectionLoadsEqualTwice(t *testing.T) {
	p := redistest.NewPKI(t)
	yaml := []byte(`apps: [{id: wx0000000000000001, secret: s}]
redis: {addrs: ["h:1"], tls: true, tls_ca_file: "` + p.CAFile + `", tls_cert_file: "` + p.ClientCertFile + `", tls_key_file: "` + p.ClientKey + `"}
`)
	load := func() *config.Config {
		c, err := config.Load(config.Options{File: "t.yaml", YAML: yaml, Environ: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if a, b := load(), load(); !reflect.DeepEqual(a.Redis, b.Redis) {
		t.Fatalf("two loads of one file differ:\n%+v\n%+v", a.Redis, b.Redis)
	}
}

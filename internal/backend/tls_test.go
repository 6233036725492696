package backend_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/tokencmd"
)

// TestTLSRedis runs all of tokenkeeper on a redis-server that speaks only
// mutual TLS (its CA, server and client certificates made by the test),
// configured by tls_ca_file, tls_cert_file, tls_key_file and
// tls_server_name; then a wrong CA, a wrong server name and a missing
// client certificate each fail the token command with the reason.
func TestTLSRedis(t *testing.T) {
	p := redistest.NewPKI(t)
	srv := redistest.Start(t, redistest.WithTLS(p))
	fake := newUpstream(t)
	tlsYAML := func(ca, cert, key, name string) string {
		y := fmt.Sprintf(`addrs: [%q], tls: true, tls_ca_file: %q, tls_server_name: %q`, srv.Addr(), ca, name)
		if cert != "" {
			y += fmt.Sprintf(`, tls_cert_file: %q, tls_key_file: %q`, cert, key)
		}
		return y
	}
	// The certificate names localhost and 127.0.0.1: the address's host
	// would do, tls_server_name is checked instead.
	exercise(t, deployedConfig(t, tlsYAML(p.CAFile, p.ClientCertFile, p.ClientKey, p.ServerName), fake.url), fake)

	for _, tt := range []struct{ name, yaml, want string }{
		{"another CA", tlsYAML(p.OtherCA(t), p.ClientCertFile, p.ClientKey, p.ServerName), "x509: certificate signed by unknown authority"},
		{"another server name", tlsYAML(p.CAFile, p.ClientCertFile, p.ClientKey, "redis.example"), "x509: certificate is valid for localhost, not redis.example"},
		{"no client certificate", tlsYAML(p.CAFile, "", "", p.ServerName), "certificate required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := deployedConfig(t, tt.yaml, fake.url)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out bytes.Buffer
			err := tokencmd.Token(ctx, cfg, "wx1", &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("token command: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

package tlsfiles_test

import (
	"crypto/tls"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/tlsfiles"
)

// servedCN is the CommonName of the certificate a handshake with addr gets.
func servedCN(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test reads the served certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestReloadSwapsTheServedCertificateAndAFailedReloadKeepsIt(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := redistest.WriteSelfSigned(t, dir, "first")
	c, err := tlsfiles.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	if cn := servedCN(t, addr); cn != "first" {
		t.Fatalf("served %q, want first", cn)
	}

	redistest.WriteSelfSigned(t, dir, "second")
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn := servedCN(t, addr); cn != "second" {
		t.Fatalf("after reload served %q, want second", cn)
	}

	// A key that does not match: refused, naming the files, the second
	// certificate stays.
	other := t.TempDir()
	_, otherKey, _ := redistest.WriteSelfSigned(t, other, "third")
	data, _ := os.ReadFile(otherKey)
	if err := os.WriteFile(keyFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	err = c.Reload()
	if err == nil || !strings.Contains(err.Error(), keyFile) || strings.Contains(err.Error(), "PRIVATE KEY-----\n") {
		t.Fatalf("err = %v, want the mismatch refused naming %s", err, keyFile)
	}
	if cn := servedCN(t, addr); cn != "second" {
		t.Fatalf("after a failed reload served %q, want second", cn)
	}
}

func TestLoadNamesAMissingFile(t *testing.T) {
	_, err := tlsfiles.Load("/nonexistent/cert.pem", "/nonexistent/key.pem")
	if err == nil || !strings.Contains(err.Error(), `"/nonexistent/cert.pem"`) {
		t.Fatalf("err = %v", err)
	}
}

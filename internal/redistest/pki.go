package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority made at test time, with one
// server certificate (valid for 127.0.0.1, ::1 and localhost, the only
// places a test server listens) and one client certificate, each written
// as PEM files into a test's temporary directory. Nothing is reused
// between tests and no private key leaves that directory.
type PKI struct {
	Dir string
	// CAFile is the CA certificate: what a client trusts, and what a
	// server checks client certificates against.
	CAFile string
	// ServerName is the name (a DNS SAN) the server certificate carries
	// besides the loopback addresses.
	ServerName                string
	ServerCertFile, ServerKey string
	ClientCertFile, ClientKey string

	caPool     *x509.CertPool
	clientPair tls.Certificate
}

// NewPKI makes a CA, a server and a client certificate valid for an hour,
// in a temporary directory of tb.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	p, err := WritePKI(tb.TempDir())
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return p
}

// WritePKI is NewPKI outside a test: it writes the files into dir.
func WritePKI(dir string) (*PKI, error) {
	p := &PKI{Dir: dir, ServerName: "localhost"}
	caKey, caCert, caDER, err := newCA("redistest CA")
	if err != nil {
		return nil, err
	}
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(caCert)
	srvDER, srvKey, err := issue(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest server"},
		DNSNames:    []string{p.ServerName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	cliDER, cliKey, err := issue(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path       *string
		name, kind string
		der        []byte
	}{
		{&p.CAFile, "ca.crt", "CERTIFICATE", caDER},
		{&p.ServerCertFile, "server.crt", "CERTIFICATE", srvDER},
		{&p.ServerKey, "server.key", "PRIVATE KEY", srvKey},
		{&p.ClientCertFile, "client.crt", "CERTIFICATE", cliDER},
		{&p.ClientKey, "client.key", "PRIVATE KEY", cliKey},
	} {
		if *f.path, err = p.write(f.name, f.kind, f.der); err != nil {
			return nil, err
		}
	}
	if p.clientPair, err = tls.LoadX509KeyPair(p.ClientCertFile, p.ClientKey); err != nil {
		return nil, fmt.Errorf("client key pair: %w", err)
	}
	return p, nil
}

// OtherCA writes the certificate of another, unrelated CA and returns its
// path: a client trusting it must refuse the server.
func (p *PKI) OtherCA(tb testing.TB) string {
	tb.Helper()
	_, _, der, err := newCA("redistest other CA")
	if err == nil {
		var path string
		if path, err = p.write("other-ca.crt", "CERTIFICATE", der); err == nil {
			return path
		}
	}
	tb.Fatalf("redistest: %v", err)
	return ""
}

// ClientTLS is a client configuration trusting the CA and presenting the
// client certificate.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      p.caPool,
		Certificates: []tls.Certificate{p.clientPair},
		ServerName:   "127.0.0.1",
	}
}

// serverArgs are redis-server's TLS arguments for this PKI, with client
// certificates required (mutual TLS).
func (p *PKI) serverArgs() []string {
	return []string{
		"--tls-cert-file", p.ServerCertFile,
		"--tls-key-file", p.ServerKey,
		"--tls-ca-cert-file", p.CAFile,
		"--tls-auth-clients", "yes",
		"--tls-replication", "yes",
	}
}

func (p *PKI) write(name, kind string, der []byte) (string, error) {
	path := filepath.Join(p.Dir, name)
	return path, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

func newCA(name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	return key, cert, der, nil
}

// issue signs tmpl (a leaf) with the CA and returns the certificate's and
// its new key's DER.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certDER, keyDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey); err != nil {
		return nil, nil, fmt.Errorf("certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	if keyDER, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	return certDER, keyDER, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
}

// SelfSigned is a fresh self-signed certificate for 127.0.0.1 and
// localhost named cn, and its key, both PEM, and the parsed certificate:
// for a server (an HTTP listener) whose clients skip verification or trust
// it directly. The one copy for every test that needs such a pair.
func SelfSigned(tb testing.TB, cn string) (certPEM, keyPEM []byte, leaf *x509.Certificate) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	sn, err := serial()
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	if leaf, err = x509.ParseCertificate(der); err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), leaf
}

// WriteSelfSigned writes SelfSigned's pair into dir as cert.pem and
// key.pem (replacing them: a reload test swaps the certificate in place).
func WriteSelfSigned(tb testing.TB, dir, cn string) (certFile, keyFile string, leaf *x509.Certificate) {
	tb.Helper()
	certPEM, keyPEM, leaf := SelfSigned(tb, cn)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile, leaf
}

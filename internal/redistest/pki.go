package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

// NewPKI makes a CA, a server and a client certificate valid for an hour.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	p := &PKI{Dir: tb.TempDir(), ServerName: "localhost"}
	caKey, caCert, caDER := newCA(tb, "redistest CA")
	p.CAFile = p.write(tb, "ca.crt", "CERTIFICATE", caDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(caCert)

	srvDER, srvKey := issue(tb, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest server"},
		DNSNames:    []string{p.ServerName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.ServerCertFile = p.write(tb, "server.crt", "CERTIFICATE", srvDER)
	p.ServerKey = p.write(tb, "server.key", "PRIVATE KEY", srvKey)

	cliDER, cliKey := issue(tb, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.ClientCertFile = p.write(tb, "client.crt", "CERTIFICATE", cliDER)
	p.ClientKey = p.write(tb, "client.key", "PRIVATE KEY", cliKey)
	pair, err := tls.LoadX509KeyPair(p.ClientCertFile, p.ClientKey)
	if err != nil {
		tb.Fatalf("redistest: client key pair: %v", err)
	}
	p.clientPair = pair
	return p
}

// OtherCA writes the certificate of another, unrelated CA and returns its
// path: a client trusting it must refuse the server.
func (p *PKI) OtherCA(tb testing.TB) string {
	tb.Helper()
	_, _, der := newCA(tb, "redistest other CA")
	return p.write(tb, "other-ca.crt", "CERTIFICATE", der)
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

func (p *PKI) write(tb testing.TB, name, kind string, der []byte) string {
	tb.Helper()
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return path
}

func newCA(tb testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	return key, cert, der
}

// issue signs tmpl (a leaf) with the CA and returns the certificate's and
// its new key's DER.
func issue(tb testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certDER, keyDER []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: key: %v", err)
	}
	tmpl.SerialNumber = serial(tb)
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("redistest: certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("redistest: key: %v", err)
	}
	return certDER, keyDER
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatalf("redistest: serial: %v", err)
	}
	return n
}

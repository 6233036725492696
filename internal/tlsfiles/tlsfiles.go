// Package tlsfiles serves a certificate read from PEM files, re-read on
// demand (a SIGHUP, an admin reload) without restarting the listener: the
// listener's tls.Config asks GetCertificate on every handshake.
//
// Guaranteed: a Reload that fails (a file missing, a key not matching its
// certificate) keeps the certificate in use and says why, naming the files
// and never their content; connections already open keep the certificate
// they shook hands with. Not done here: watching the files (renewals are
// picked up by the next reload), client certificates.
package tlsfiles

import (
	"crypto/tls"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
)

// Certificate is a key pair loaded from CertFile and KeyFile.
type Certificate struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
}

// Load reads the key pair (certFile holds the certificate and its chain,
// leaf first). Its error names both files.
func Load(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files; on failure the certificate in use stays.
func (c *Certificate) Reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: cert_file %s and key_file %s: %w", strconv.Quote(c.certFile), strconv.Quote(c.keyFile), scrubPath(err))
	}
	c.current.Store(&pair)
	return nil
}

// Files returns the paths the certificate is read from.
func (c *Certificate) Files() (certFile, keyFile string) { return c.certFile, c.keyFile }

// GetCertificate is for tls.Config.GetCertificate.
func (c *Certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current.Load(), nil
}

// ServerConfig is a server tls.Config serving c: TLS 1.2 or later, HTTP/2
// and HTTP/1.1.
func (c *Certificate) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}

// scrubPath keeps an *os.PathError's reason without repeating the path,
// which the message already names.
func scrubPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// MinLockAddrs is the fewest independent masters redis.lock_addrs may
// name: with three, a majority (two) survives the loss of one.
const MinLockAddrs = 3

// Cluster reports whether the addresses are a Redis Cluster's: several,
// and no master_name (which makes them Sentinels). go-redis's universal
// client decides the same way.
func (r *Redis) Cluster() bool { return len(r.Addrs) > 1 && r.MasterName == "" }

// resolveRedisExtra copies the TLS files, the server name and the lock
// masters from the file, and reads the TLS files with read.
func resolveRedisExtra(c *Redis, raw *rawRedis, read func(string) ([]byte, error)) {
	c.TLSCAFile = strings.TrimSpace(raw.TLSCAFile)
	c.TLSCertFile = strings.TrimSpace(raw.TLSCertFile)
	c.TLSKeyFile = strings.TrimSpace(raw.TLSKeyFile)
	c.TLSServerName = strings.TrimSpace(raw.TLSServerName)
	for _, a := range raw.LockAddrs {
		if a = strings.TrimSpace(a); a != "" {
			c.LockAddrs = append(c.LockAddrs, a)
		}
	}
	if c.TLS {
		c.tlsFiles = readTLSFiles(c, read) // redisProblems reports what is wrong
	}
}

// tlsFiles are the TLS files' contents, read at validation, with the paths
// they were read from. Plain data, so two loads of one configuration are
// reflect.DeepEqual.
type tlsFiles struct {
	ca, cert, key          string
	caPEM, certPEM, keyPEM []byte
	field                  string // the key of the first file that could not be read
	err                    error  // why
}

func readTLSFiles(r *Redis, read func(string) ([]byte, error)) *tlsFiles {
	f := &tlsFiles{ca: r.TLSCAFile, cert: r.TLSCertFile, key: r.TLSKeyFile}
	for _, x := range []struct {
		key, path string
		dst       *[]byte
	}{{"redis.tls_ca_file", f.ca, &f.caPEM}, {"redis.tls_cert_file", f.cert, &f.certPEM}, {"redis.tls_key_file", f.key, &f.keyPEM}} {
		if x.path == "" {
			continue
		}
		b, err := read(x.path)
		if err != nil {
			// A path is not a secret: named in full. Contents never are.
			f.field, f.err = x.key, fmt.Errorf("cannot read %s: %v", strconv.Quote(x.path), readFailure(err))
			return f
		}
		*x.dst = b
	}
	return f
}

// current returns r's TLS files, read again with os.ReadFile if they were
// not read from r's paths (a Config changed by hand).
func (r *Redis) current() *tlsFiles {
	if f := r.tlsFiles; f != nil && f.ca == r.TLSCAFile && f.cert == r.TLSCertFile && f.key == r.TLSKeyFile {
		return f
	}
	return readTLSFiles(r, os.ReadFile)
}

// redisProblems checks the rules of the TLS and lock keys.
func (c *Config) redisProblems(add func(field, envName, format string, args ...any)) {
	r := &c.Redis
	if !r.TLS {
		for key, v := range map[string]string{"redis.tls_ca_file": r.TLSCAFile, "redis.tls_cert_file": r.TLSCertFile, "redis.tls_key_file": r.TLSKeyFile, "redis.tls_server_name": r.TLSServerName} {
			if v != "" {
				add(key, EnvName(key), "is set but redis.tls is false: set redis.tls: true to connect with TLS")
			}
		}
	}
	if (r.TLSCertFile == "") != (r.TLSKeyFile == "") {
		add("redis.tls_cert_file", EnvName("redis.tls_cert_file"), "a client certificate needs both redis.tls_cert_file and redis.tls_key_file")
	} else if r.TLS {
		r.tlsFiles = r.current()
		if _, field, err := r.tlsFiles.config(); err != nil {
			add(field, EnvName(field), "%v", err)
		}
	}
	if n := len(r.LockAddrs); n > 0 && n < MinLockAddrs {
		add("redis.lock_addrs", EnvName("redis.lock_addrs"), "%d independent masters: give none (the lock and lease live in redis.addrs) or at least %d, so that a majority survives losing one", n, MinLockAddrs)
	}
	seen := map[string]bool{}
	for i, a := range r.LockAddrs {
		field := fmt.Sprintf("redis.lock_addrs[%d]", i)
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || !validPort(port) {
			add(field, EnvName("redis.lock_addrs"), "%s is not host:port", shown(a))
		} else if seen[a] {
			add(field, EnvName("redis.lock_addrs"), "%s is given twice: the masters must be independent", strconv.Quote(a))
		}
		seen[a] = true
	}
}

// config builds the client TLS configuration from the files, or says
// which key's file is wrong.
func (f *tlsFiles) config() (*tls.Config, string, error) {
	if f.err != nil {
		return nil, f.field, f.err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(f.caPEM) {
			return nil, "redis.tls_ca_file", fmt.Errorf("%s holds no PEM certificate", strconv.Quote(f.ca))
		}
	}
	if f.cert != "" && f.key != "" {
		pair, err := tls.X509KeyPair(f.certPEM, f.keyPEM)
		if err != nil {
			// crypto/tls's messages name no key material.
			return nil, "redis.tls_cert_file", fmt.Errorf("%s and %s are not a certificate and its key: %v", strconv.Quote(f.cert), strconv.Quote(f.key), err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, "", nil
}

// tlsFor returns the TLS configuration for a connection to the servers at
// addrs (nil without TLS). The server's certificate must carry
// TLSServerName, or, when that is empty and there is one address, that
// address's host; otherwise go-redis names each node by its own host.
func (r *Redis) tlsFor(addrs []string) *tls.Config {
	if !r.TLS {
		return nil
	}
	tc, _, err := r.current().config()
	if err != nil {
		// Never validated (Validate would have refused it): every
		// handshake fails with the reason instead.
		return &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return nil, err
		}, VerifyConnection: func(tls.ConnectionState) error { return err }}
	}
	switch {
	case r.TLSServerName != "":
		tc.ServerName = r.TLSServerName
	case len(addrs) == 1:
		if host, _, err := net.SplitHostPort(addrs[0]); err == nil {
			tc.ServerName = host
		}
	}
	return tc
}

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
// masters from the file, and keeps read for loading the TLS files.
func resolveRedisExtra(c *Redis, raw *rawRedis, read func(string) ([]byte, error), add func(field, envName, format string, args ...any)) {
	c.TLSCAFile = strings.TrimSpace(raw.TLSCAFile)
	c.TLSCertFile = strings.TrimSpace(raw.TLSCertFile)
	c.TLSKeyFile = strings.TrimSpace(raw.TLSKeyFile)
	c.TLSServerName = strings.TrimSpace(raw.TLSServerName)
	for _, a := range raw.LockAddrs {
		if a = strings.TrimSpace(a); a != "" {
			c.LockAddrs = append(c.LockAddrs, a)
		}
	}
	c.readFile = read
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
		// Loaded on every validation, so a Config changed by hand and
		// validated again uses its files of now.
		read := r.readFile
		if read == nil {
			read = os.ReadFile
		}
		r.tls = nil
		if tc, field, err := r.loadTLS(read); err != nil {
			add(field, EnvName(field), "%v", err)
		} else {
			r.tls = tc
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

// loadTLS builds the client TLS configuration from the files, or says
// which key's file is wrong. Paths are named in full: a path is not a
// secret; file contents never appear.
func (r *Redis) loadTLS(read func(string) ([]byte, error)) (*tls.Config, string, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if r.TLSCAFile != "" {
		pem, err := read(r.TLSCAFile)
		if err != nil {
			return nil, "redis.tls_ca_file", fmt.Errorf("cannot read %s: %v", strconv.Quote(r.TLSCAFile), readFailure(err))
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, "redis.tls_ca_file", fmt.Errorf("%s holds no PEM certificate", strconv.Quote(r.TLSCAFile))
		}
	}
	if r.TLSCertFile != "" && r.TLSKeyFile != "" {
		certPEM, err := read(r.TLSCertFile)
		if err != nil {
			return nil, "redis.tls_cert_file", fmt.Errorf("cannot read %s: %v", strconv.Quote(r.TLSCertFile), readFailure(err))
		}
		keyPEM, err := read(r.TLSKeyFile)
		if err != nil {
			return nil, "redis.tls_key_file", fmt.Errorf("cannot read %s: %v", strconv.Quote(r.TLSKeyFile), readFailure(err))
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			// crypto/tls's messages name no key material.
			return nil, "redis.tls_cert_file", fmt.Errorf("%s and %s are not a certificate and its key: %v", strconv.Quote(r.TLSCertFile), strconv.Quote(r.TLSKeyFile), err)
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
	tc := r.tls
	if tc == nil {
		var err error
		if tc, _, err = r.loadTLS(os.ReadFile); err != nil {
			// Never validated (Validate would have refused it): every
			// handshake fails with the reason instead.
			return &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return nil, err
			}, VerifyConnection: func(tls.ConnectionState) error { return err }}
		}
	}
	tc = tc.Clone()
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

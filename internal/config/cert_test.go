package config_test

import (
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// testCert is a fresh self-signed certificate and its key, both PEM.
func testCert(t *testing.T) (certPEM, keyPEM string) {
	c, k, _ := redistest.SelfSigned(t, "tokenkeeper test")
	return string(c), string(k)
}

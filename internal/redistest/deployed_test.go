package redistest

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestTLSServerSpeaksOnlyMutualTLS(t *testing.T) {
	p := NewPKI(t)
	s := Start(t, WithTLS(p))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("with the PKI's client config: %v", err)
	}

	try := func(o *redis.Options) error {
		o.Addr, o.MaxRetries = s.Addr(), -1
		c := redis.NewClient(o)
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	if err := try(&redis.Options{}); err == nil {
		t.Error("plain text accepted on the TLS port")
	}
	noCert := p.ClientTLS()
	noCert.Certificates = nil
	if err := try(&redis.Options{TLSConfig: noCert}); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	other := p.ClientTLS()
	pem, err := os.ReadFile(p.OtherCA(t))
	if err != nil {
		t.Fatal(err)
	}
	other.RootCAs = x509.NewCertPool()
	other.RootCAs.AppendCertsFromPEM(pem)
	err = try(&redis.Options{TLSConfig: other})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("trusting another CA: err %v, want x509.UnknownAuthorityError", err)
	}
	wrongName := p.ClientTLS()
	wrongName.ServerName = "redis.example"
	var host x509.HostnameError
	if err := try(&redis.Options{TLSConfig: wrongName}); !errors.As(err, &host) {
		t.Errorf("another server name: err %v, want x509.HostnameError", err)
	}
}

func TestSentinelGroupFormsAndNamesItsMaster(t *testing.T) {
	g := StartSentinel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := g.MasterAddr(ctx)
	if err != nil || addr != g.Master.Addr() {
		t.Fatalf("MasterAddr %q, %v: want %s", addr, err, g.Master.Addr())
	}
	if len(g.SentinelAddrs()) != 3 {
		t.Fatalf("sentinels %v", g.SentinelAddrs())
	}
	// A failover client writes to the master; the replica receives it.
	fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: g.SentinelAddrs()})
	defer fc.Close()
	if err := fc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := g.Master.Client().Wait(ctx, 1, time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Replica.Client().Get(ctx, "k").Result(); v != "v" {
		t.Fatalf("replica: %q %v", v, err)
	}
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

func TestIdeal(t *testing.T) {
	const i = 13 * time.Second
	for _, c := range []struct {
		d          time.Duration
		n, minimum int
	}{
		{0, 1, 1},
		{12 * time.Second, 1, 1},
		{13 * time.Second, 2, 1},         // ends right at a due refresh: it may or may not have happened
		{14500 * time.Millisecond, 2, 1}, // within 2 s of it
		{16 * time.Second, 2, 2},         // well past it
		{60 * time.Second, 5, 5},         // 0, 13, 26, 39, 52
		{65500 * time.Millisecond, 6, 5}, // 65 is due
		{-time.Second, 0, 0},
	} {
		n, m := ideal(c.d, i)
		if n != c.n || m != c.minimum {
			t.Errorf("ideal(%v, %v) = %d, %d; want %d, %d", c.d, i, n, m, c.n, c.minimum)
		}
	}
}

func TestRefreshIntervalFollowsTokencacheRule(t *testing.T) {
	cfg := DefaultConfig()
	// 20 s tokens, margin 1 s: usable 19 s; ahead 6 s: due after 13 s.
	if got := cfg.RefreshInterval(); got != 13*time.Second {
		t.Fatalf("RefreshInterval = %v, want 13s", got)
	}
	cfg.Cache.RefreshAhead = time.Hour // clamped to half the usable life
	if got := cfg.RefreshInterval(); got != 9500*time.Millisecond {
		t.Fatalf("RefreshInterval with a huge refresh-ahead = %v, want 9.5s", got)
	}
}

func TestErrcodeOf(t *testing.T) {
	for body, want := range map[string]int{
		`{"ip_list":["127.0.0.1"]}`:            0,
		`{"errcode":40001,"errmsg":"invalid"}`: 40001,
		`{"errcode":42001,"errmsg":"expired"}`: 42001,
		`{"errcode":-1}`:                       -1,
		`<html>`:                               -2,
		`{"errcode":x}`:                        -2,
	} {
		if got := errcodeOf([]byte(body)); got != want {
			t.Errorf("errcodeOf(%s) = %d, want %d", body, got, want)
		}
	}
}

func TestPlanSpreadsWholeCyclesBeforeTheTail(t *testing.T) {
	cfg := DefaultConfig()
	cfg.fillDefaults()
	s := plan(&cfg)
	if len(s) != len(cycle) {
		t.Fatalf("the default run plans %d faults, want one cycle of %d", len(s), len(cycle))
	}
	tail := cfg.Grace + cfg.Cache.NearMaxAge + 4*time.Second
	for i, f := range s {
		if f.Kind != cycle[i] {
			t.Errorf("fault %d is %s, want %s", i, f.Kind, cycle[i])
		}
		if f.Planned > cfg.Duration-tail {
			t.Errorf("fault %s planned at %v, inside the tail after %v", f.Kind, f.Planned, cfg.Duration-tail)
		}
		if i > 0 && f.Planned-s[i-1].Planned < 5*time.Second {
			t.Errorf("faults %s and %s only %v apart", s[i-1].Kind, f.Kind, f.Planned-s[i-1].Planned)
		}
		if isUpstreamFault(f.Kind) != (f.App != "") {
			t.Errorf("fault %s aimed at app %q", f.Kind, f.App)
		}
	}
	cfg.Faults = false
	if s := plan(&cfg); len(s) != 0 {
		t.Fatalf("no-fault run plans %d faults", len(s))
	}
	cfg.Faults, cfg.Duration = true, 5*time.Minute
	if s := plan(&cfg); len(s) < 2*len(cycle) {
		t.Fatalf("a five-minute run plans %d faults, want at least two cycles", len(s))
	}
}

func TestReplicaConfigYAMLCarriesNoSecret(t *testing.T) {
	cfg := DefaultConfig()
	y := replicaConfigYAML(&cfg, "replica-1", "127.0.0.1:1234", "http://127.0.0.1:5678", SecretEnv, 4321, 4322)
	for _, want := range []string{
		`identity: "replica-1"`, `addrs: ["127.0.0.1:1234"]`, `base_url: "http://127.0.0.1:5678"`,
		`- id: "wxchaos00002"`, `secret_env: "` + SecretEnv + `"`, `key_prefix: "chaos:"`, "overlap: 5s",
		"lock_ttl: 3s", `name: "chaos:leader"`, `addr: "127.0.0.1:4321"`,
		"gateway:\n  addr: \"127.0.0.1:4322\"", `key_env: "` + GatewayKeyEnv + `"`,
	} {
		if !strings.Contains(y, want) {
			t.Errorf("config lacks %q:\n%s", want, y)
		}
	}
	if strings.Contains(y, "secret:") || strings.Contains(y, "key:") {
		t.Errorf("config holds a secret inline:\n%s", y)
	}
}

func TestAppsInFlight(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	u := &upstream{calls: map[string][]tokenCall{
		"done":    {{at: at(1), end: at(1.01), port: 1}},
		"flying":  {{at: at(4.9), end: at(5.2), port: 2}},
		"late":    {{at: at(6), end: at(6.01), port: 3}},
		"hanging": {{at: at(3), port: 4}}, // no reply yet
	}}
	got := u.appsInFlight(at(5), at(5), nil)
	slices.Sort(got)
	if want := []string{"flying", "hanging"}; !slices.Equal(got, want) {
		t.Fatalf("in flight at 5s: %v, want %v", got, want)
	}
	if got := u.appsInFlight(at(5), at(5), map[int]bool{4: true}); !slices.Equal(got, []string{"hanging"}) {
		t.Fatalf("in flight at 5s from port 4: %v, want [hanging]", got)
	}
}

func TestChargeEarlyMints(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const interval = 13 * time.Second
	stop := &FaultRecord{Kind: FaultLockHolderStop, Applied: true, At: at(39), Ended: at(50), Refetch: []string{"a"}}
	other := &FaultRecord{Kind: FaultUpstreamBusy, Applied: true, At: at(39), Ended: at(50), Refetch: []string{"b"}}
	calls := []TokenCall{
		{At: at(0), Minted: 1},
		{At: at(13), Minted: 1},   // on time
		{At: at(26), Minted: 0},   // refused: no mint
		{At: at(26.1), Minted: 1}, // on time
		{At: at(39), Minted: 1},   // on time (frozen holder)
		{At: at(42), Minted: 1},   // early: the stop explains it
		{At: at(43), Minted: 1},   // early again: nothing left to explain it
		{At: at(60), Minted: 2},   // two at once: the second is early
	}
	un := chargeEarlyMints(calls, "a", []*FaultRecord{other, stop}, interval)
	if len(un) != 2 || !un[0].At.Equal(at(43)) || !un[1].At.Equal(at(60)) {
		t.Fatalf("unexcused early mints %+v, want the ones at 43s and 60s", un)
	}
	if calls[5].Excuse != FaultLockHolderStop || !calls[5].Early {
		t.Fatalf("mint at 42s: early %v excuse %q, want charged to the stop", calls[5].Early, calls[5].Excuse)
	}
	if calls[1].Early || calls[3].Early || calls[4].Early {
		t.Fatal("an on-time mint was marked early")
	}
}

func TestReaderFlagsRoundTrip(t *testing.T) {
	d := DefaultConfig()
	want := ReaderConfig{ID: 7, RedisAddr: "127.0.0.1:1", UpstreamURL: "http://127.0.0.1:2", Apps: 1000, Goroutines: 20,
		Interval: 300 * time.Millisecond, MaxDuration: 3 * time.Minute, ReportEvery: time.Second, KeyPrefix: "x:",
		Grace: d.Grace, Cache: d.Cache, Gateways: []string{"http://127.0.0.1:3", "http://127.0.0.1:4"}, GatewayGoroutines: 2}
	args := want.args()
	if args[0] != "reader" {
		t.Fatalf("args start with %q, want the reader subcommand", args[0])
	}
	got, err := ParseReaderFlags(args[1:], io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
	want.Gateways, want.GatewayGoroutines = nil, 0
	if got, err := ParseReaderFlags(want.args()[1:], io.Discard); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip without gateways: got %+v (%v), want %+v", got, err, want)
	}
	noGateway := append(want.args()[1:], "--gateway-goroutines", "3")
	if _, err := ParseReaderFlags(noGateway, io.Discard); err == nil {
		t.Fatal("SDK goroutines without --gateways were accepted")
	}
	if _, err := ParseReaderFlags([]string{"--redis", "127.0.0.1:1"}, io.Discard); err == nil {
		t.Fatal("a reader without --upstream was accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.ReaderBin, c.RefresherBin, c.WorkDir = "/bin/chaos", "/bin/refresher", t.TempDir()
		c.fillDefaults()
		return c
	}
	c := valid()
	if err := c.validate(); err != nil {
		t.Fatalf("default config refused: %v", err)
	}
	for name, tc := range map[string]struct {
		change func(*Config)
		want   string
	}{
		"outage outlives the tokens": {func(c *Config) { c.RedisOutage = 6 * time.Second }, "redis outage 6s"},
		"holder frozen too briefly":  {func(c *Config) { c.StopFor = c.Cache.LockTTL }, "stop-for 3s"},
		"grace too short":            {func(c *Config) { c.Grace = 2 * time.Second }, "grace 2s"},
		"fetch outlives lock":        {func(c *Config) { c.Cache.FetchTimeout = c.Cache.LockTTL }, "fetch timeout 3s"},
		"replicas without binary":    {func(c *Config) { c.RefresherBin = "" }, "refresher binary"},
		"lease not decreasing":       {func(c *Config) { c.Lease.RenewDeadline = c.Lease.Duration }, "must be decreasing"},
	} {
		c := valid()
		tc.change(&c)
		err := c.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestCheckFlagsEveryBrokenInvariant(t *testing.T) {
	cfg := DefaultConfig()
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	restart := &FaultRecord{Kind: FaultRedisRestart, Applied: true, At: at(50), Ended: at(57), DataLoss: true}
	clean := func() *Report {
		return &Report{
			Started: t0, UsableLife: 19 * time.Second, Faults: []*FaultRecord{restart}, PoisonBound: 7 * time.Second,
			DataLoss: []DataLossWindow{{From: at(50), To: at(57)}},
			Fetches:  FetchReport{PerApp: []AppFetch{{App: "a", Minted: 5, TokenCalls: 5, Ideal: 5, LongestWithoutMint: 13 * time.Second}}},
		}
	}
	if v := clean().check(&cfg); len(v) != 0 {
		t.Fatalf("a clean run has violations: %q", v)
	}
	withNewFaults := clean()
	withNewFaults.Faults = append(withNewFaults.Faults,
		&FaultRecord{Kind: FaultPartition, Applied: true, At: at(20), Ended: at(34), Reader: 3, App: "a"},
		&FaultRecord{Kind: FaultPoisonRecord, Applied: true, At: at(4), Ended: at(12),
			Poison: []*PoisonedRecord{{App: "a", Mutation: "version-zero", Written: at(4), Replaced: at(4.3), Mints: 2, Ideal: 1}}})
	if v := withNewFaults.check(&cfg); len(v) != 0 {
		t.Fatalf("a clean partition and a poison replaced at once by one fetch have violations: %q", v)
	}
	for name, tc := range map[string]struct {
		change func(*Report)
		want   string
	}{
		"too many fetches":   {func(r *Report) { r.Fetches.PerApp[0].Minted = 6 }, "6 tokens minted, more than the ideal 5 + 0"},
		"early mint":         {func(r *Report) { r.Fetches.PerApp[0].EarlyUnexcused = []TokenCall{{At: at(20), Sender: "reader-1/9"}} }, "t=20.00s by reader-1/9"},
		"token ran out":      {func(r *Report) { r.Fetches.PerApp[0].LongestWithoutMint = 20 * time.Second }, "a refresh was missed"},
		"dead call":          {func(r *Report) { r.DeadOutside = []DeadCall{{At: at(30), Code: 40001, Token: "abcd"}} }, "1 business calls answered with a dead token"},
		"fault not applied":  {func(r *Report) { r.Faults = append(r.Faults, &FaultRecord{Kind: FaultRedisOutage, Detail: "x"}) }, "redis-outage"},
		"app never fetched":  {func(r *Report) { r.Fetches.PerApp[0].TokenCalls = 0 }, "never fetched"},
		"dead without fault": {func(r *Report) { r.Faults = nil; r.Business.Superseded = 1 }, "no faults, yet"},
		"dead in a fault's window": {func(r *Report) {
			r.Faults = append(r.Faults, &FaultRecord{Kind: FaultPartition, Applied: true, At: at(20), Ended: at(34), Dead: 2, DeadByReader: map[int]int{3: 2}})
		}, "fault partition at t=20.00s: 2 business call(s) on a dead token in its window (to t=34.00s); readers saw them: reader-3 x2"},
		"poison left in place": {func(r *Report) {
			r.Faults = append(r.Faults, &FaultRecord{Kind: FaultPoisonRecord, Applied: true, At: at(4), Ended: at(30),
				Poison: []*PoisonedRecord{{App: "a", Mutation: "version-zero", Written: at(4), TTL: 5 * time.Second, Replaced: at(13), Mints: 1, Ideal: 1}}})
		}, "app a, mutation version-zero: the corrupt record was not replaced by a new token within 7s (new token after 9s"},
		"poison nobody read, left past its key's end": {func(r *Report) {
			r.Faults = append(r.Faults, &FaultRecord{Kind: FaultPoisonRecord, Applied: true, At: at(4), Ended: at(30),
				Poison: []*PoisonedRecord{{App: "a", Mutation: "version-zero", Written: at(4), TTL: 15 * time.Second, Replaced: at(21), Mints: 1, Ideal: 1}}})
		}, "app a, mutation version-zero: the corrupt record was not replaced by a new token within 16s (new token after 17s"},
		"poison mint storm": {func(r *Report) {
			r.Faults = append(r.Faults, &FaultRecord{Kind: FaultPoisonRecord, Applied: true, At: at(4), Ended: at(30),
				Poison: []*PoisonedRecord{{App: "a", Mutation: "issued-at-20-digits", Written: at(4), Replaced: at(4.2), Mints: 4, Ideal: 1, OtherFaults: 1}}})
		}, "4 tokens minted from the poison to the window's end, more than the ideal 1 + 1 for the poison + 1 for other faults"},
	} {
		r := clean()
		tc.change(r)
		v := r.check(&cfg)
		if len(v) == 0 || !strings.Contains(strings.Join(v, "\n"), tc.want) {
			t.Errorf("%s: violations %q, want one mentioning %q", name, v, tc.want)
		}
	}
}

func TestDuesIn(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const i = 13 * time.Second
	for _, c := range []struct {
		prev     time.Time
		from, to float64
		want     int
	}{
		{at(0), 4, 23, 1},  // due at 13
		{at(0), 14, 25, 0}, // next due at 26
		{at(0), 1, 40, 3},  // 13, 26, 39
		{time.Time{}, 0, 60, 0},
	} {
		if got := duesIn(c.prev, at(c.from), at(c.to), i); got != c.want {
			t.Errorf("duesIn(prev %v, %v..%v) = %d, want %d", c.prev.Sub(t0), c.from, c.to, got, c.want)
		}
	}
}

func TestFaultConcerns(t *testing.T) {
	fleet := &FaultRecord{Kind: FaultRedisOutage}
	up := &FaultRecord{Kind: FaultUpstreamBusy, App: "a", Refetch: []string{"a"}}
	cut := &FaultRecord{Kind: FaultPartition, App: "a", Reader: 3}
	poison := &FaultRecord{Kind: FaultPoisonRecord, App: "a,b"}
	for _, c := range []struct {
		f    *FaultRecord
		d    DeadCall
		want bool
	}{
		{fleet, DeadCall{App: "z", Reader: 1}, true},
		{up, DeadCall{App: "a", Reader: 1}, true},
		{up, DeadCall{App: "b", Reader: 1}, false},
		{cut, DeadCall{App: "b", Reader: 3}, true}, // the cut reader, any app
		{cut, DeadCall{App: "b", Reader: 4}, false},
		{cut, DeadCall{App: "a", Reader: 4}, true},
		{poison, DeadCall{App: "b", Reader: 4}, true},
		{poison, DeadCall{App: "c", Reader: 4}, false},
	} {
		if got := c.f.concerns(c.d); got != c.want {
			t.Errorf("%s concerns %+v = %v, want %v", c.f.Kind, c.d, got, c.want)
		}
	}
}

// errKind names errors by the library's classification, never by text of
// its own (and never prints the error).
func TestErrKindIsTheLibrarysClassification(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("get: %w", tokencache.ErrUnavailable), "redis unavailable and no usable token in memory"},
		{&tokencache.HeldError{AppID: "wx1", Err: &wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken}}, "held (upstream quota)"},
		{&wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}, "upstream transient"},
		{&wechat.Error{Code: 40125, Endpoint: wechat.EndpointToken}, "upstream config"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "timeout"},
		{&url.Error{Op: "Get", URL: "http://127.0.0.1:1/?access_token=SECRET", Err: errors.New("refused")}, "other"},
	} {
		if got := errKind(tc.err); got != tc.want {
			t.Errorf("errKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	for _, code := range []int{40001, 40014, 42001} {
		if !deadTokenCode(code) {
			t.Errorf("errcode %d is a dead token", code)
		}
	}
	if deadTokenCode(0) || deadTokenCode(45009) {
		t.Error("0 and 45009 are no dead token")
	}
}

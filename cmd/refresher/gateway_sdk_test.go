package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// The SDK run's timings. The fake's tokens live 24 s with a 6 s overlap;
// with margin 1 s a token is usable 23 s and due after 12 s (refresh_ahead
// 11 s). co-wechat-api keeps a token for expires_in - 10 s, so the token
// an SDK holds outlives the next rotation by about a second: every
// rotation puts stale tokens in the SDKs' hands, which the gateway must
// replace on the way.
const (
	sdkLifetime   = 24 * time.Second
	sdkGrace      = 6 * time.Second
	sdkRefresh    = 12 * time.Second
	sdkRun        = 21 * time.Second
	sdkCredential = "node-sdk-gateway-credential-0123"
	sdkProcesses  = 3
)

const sdkReplicaYAML = `
identity: %s
redis:
  addrs: [%q]
wechat:
  base_url: %q
  timeout: 2s
apps:
  - {id: wxa, secret: %q, mode: classic}
cache:
  key_prefix: "sdk:"
  refresh_ahead: 11s
  margin: 1s
  overlap: 6s
  near_max_age: 500ms
  lock_ttl: 2s
  fetch_timeout: 1s
lease:
  name: "sdk:leader"
  duration: 2s
  renew_deadline: 1200ms
  retry_period: 300ms
http:
  addr: %q
  api_keys:
    - {name: all, key: %q, apps: ["*"]}
gateway:
  addr: %q
  credentials:
    - {name: node-sdk, key: %q, apps: [wxa]}
log:
  level: info
  format: json
`

// sdkResult is what one client.js process prints.
type sdkResult struct {
	Calls   int            `json:"calls"`
	OK      int            `json:"ok"`
	Errors  map[string]int `json:"errors"`
	Fetches int            `json:"fetches"`
}

// nodeSDK returns the directory of the installed Node SDK (npm ci with the
// committed lockfile when node_modules is missing). Without node or npm
// the test is skipped, but fails under CI=true.
func nodeSDK(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "testdata", "node-sdk"))
	if err != nil {
		t.Fatal(err)
	}
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (the Node SDK test must run)", what)
		}
		t.Skipf("%s not available: skipping the Node SDK test (it runs under CI)", what)
	}
	if _, err := exec.LookPath("node"); err != nil {
		missing("node")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "co-wechat-api", "package.json")); err == nil {
		return dir
	}
	if _, err := exec.LookPath("npm"); err != nil {
		missing("npm")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return dir
}

// TestNodeSDKThroughTheGateway runs a real Node WeChat SDK (co-wechat-api,
// unmodified, configured only by its own API hosts (api.prefix and the
// other *Prefix properties) and a gateway credential in place of the
// AppSecret) in several processes against 3
// replicas' gateways and the fake, through an upstream fault, the
// leader's kill and a Redis restart. The fake must count no business call
// on a dead token, and no more mints than the ideal plus one per fault.
func TestNodeSDKThroughTheGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the SDK run takes about 25 s")
	}
	sdkDir := nodeSDK(t)
	rs := redistest.Start(t)
	client := rs.Client()
	secret := fmt.Sprintf("sdk-secret-%d", time.Now().UnixNano())
	fake := wechattest.NewHandler(wechattest.WithApp("wxa", secret), wechattest.WithLifetime(sdkLifetime), wechattest.WithGrace(sdkGrace))
	t.Cleanup(fake.Close)
	upstream := sdkUpstream(t, fake)

	dir := t.TempDir()
	const n = 3
	var configs, gateways, names, admins []string
	for i := range n {
		name := fmt.Sprintf("g%d", i+1)
		gw, admin := freeAddr(t), freeAddr(t)
		yaml := fmt.Sprintf(sdkReplicaYAML, name, rs.Addr(), upstream, secret, admin, testAPIKey, gw, sdkCredential)
		admins = append(admins, "http://"+admin)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		configs, gateways, names = append(configs, path), append(gateways, "http://"+gw), append(names, name)
	}
	procs := make([]*proc, n)
	start := func(i int) { procs[i] = startProc(t, names[i], baseEnv(), "serve", "--config", configs[i]) }
	for i := range n {
		start(i)
	}
	tokenURL := func(i int) string {
		return gateways[i] + "/cgi-bin/token?grant_type=client_credential&appid=wxa&secret=" + sdkCredential
	}
	for i := range n {
		if !pollUntil(15*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(httpBody(tokenURL(i)), "access_token") }) {
			t.Fatalf("gateway %s never served a token", names[i])
		}
	}

	// The SDK processes: each calls the 3 gateways in turn, starting at
	// its own.
	var wg sync.WaitGroup
	results := make([]sdkResult, sdkProcesses)
	outs := make([]*testlog.Buffer, sdkProcesses)
	began := time.Now()
	for p := range sdkProcesses {
		bases := append(append([]string{}, gateways[p%n:]...), gateways[:p%n]...)
		args := append([]string{filepath.Join(sdkDir, "client.js"), "wxa", sdkCredential, fmt.Sprint(sdkRun.Milliseconds())}, bases...)
		cmd := exec.Command("node", args...)
		cmd.Dir = sdkDir
		cmd.Env = baseEnv()
		outs[p] = &testlog.Buffer{}
		var stderr testlog.Buffer
		cmd.Stdout, cmd.Stderr = outs[p], &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("node: %v", err)
		}
		done := make(chan struct{})
		t.Cleanup(func() {
			select {
			case <-done:
			default:
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			if err := cmd.Wait(); err != nil {
				t.Errorf("SDK process %d: %v\n%s", p, err, stderr.String())
				return
			}
			if err := json.Unmarshal([]byte(strings.TrimSpace(outs[p].String())), &results[p]); err != nil {
				t.Errorf("SDK process %d printed %q: %v", p, outs[p].String(), err)
			}
		}()
	}

	// Faults, each once, while the SDKs run.
	faults := 0
	at := func(d time.Duration) { time.Sleep(time.Until(began.Add(d))) } // a schedule on the wall clock, not a synchronization
	at(3 * time.Second)
	fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply, Endpoint: wechat.EndpointToken})
	fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultBusy, Endpoint: wechat.EndpointToken})
	faults++
	at(6 * time.Second)
	var leader string
	pollUntil(2*time.Second, 20*time.Millisecond, func() bool { leader = sdkLeader(t, client); return leader != "" })
	li := -1
	for i, name := range names {
		if name == leader {
			li = i
		}
	}
	if li < 0 {
		t.Fatalf("no leader among %v (lease holder %q)", names, leader)
	}
	_ = syscall.Kill(-procs[li].cmd.Process.Pid, syscall.SIGKILL)
	procs[li].wait(t, 5*time.Second)
	faults++
	at(7 * time.Second)
	start(li) // its supervisor brings it back, on the same addresses
	at(10 * time.Second)
	rs.Restart() // empty: the record, the lease and the gateway's ledger are gone
	faults++
	wg.Wait()
	elapsed := time.Since(began)

	// What the gateways did: stale SDK tokens replaced on the way.
	replaced := 0.0
	for i := range n {
		for _, line := range strings.Split(httpBody(admins[i]+"/metrics"), "\n") {
			if v, ok := strings.CutPrefix(line, "tokenkeeper_gateway_stale_replaced_total "); ok {
				var f float64
				fmt.Sscan(v, &f)
				replaced += f
			}
		}
	}
	t.Logf("stale SDK tokens replaced on the way (live replicas): %v", replaced)
	if replaced == 0 {
		t.Error("no SDK call held a stale token: the run did not exercise the replacement")
	}
	st := fake.Stats("wxa")
	t.Logf("fake: %+v over %v", st, elapsed.Round(time.Millisecond))
	total := sdkResult{Errors: map[string]int{}}
	for p, r := range results {
		t.Logf("SDK process %d: %+v", p, r)
		total.Calls += r.Calls
		total.OK += r.OK
		total.Fetches += r.Fetches
		for k, v := range r.Errors {
			total.Errors[k] += v
		}
		if r.OK == 0 {
			t.Errorf("SDK process %d made no successful call", p)
		}
	}
	if dead := st.BusinessSuperseded + st.BusinessExpired; dead != 0 {
		t.Errorf("the fake counted %d business calls on a dead token, want 0", dead)
	}
	if st.BusinessInvalid != 0 {
		t.Errorf("the fake counted %d calls with a token it never minted: the gateway forwarded an unknown token", st.BusinessInvalid)
	}
	for _, code := range []string{"40001", "40014", "42001"} {
		if total.Errors[code] != 0 {
			t.Errorf("the SDK gave up on %d calls with errcode %s", total.Errors[code], code)
		}
	}
	// Connection errors are the killed replica's, until it is back; any
	// other failure must be rare.
	others := 0
	for k, v := range total.Errors {
		if !strings.Contains(k, "ECONNREFUSED") && !strings.Contains(k, "ECONNRESET") && k != "RequestError" && k != "Error" {
			others += v
		}
	}
	if others*50 > total.Calls {
		t.Errorf("%d of %d SDK calls failed otherwise: %v", others, total.Calls, total.Errors)
	}
	ideal := 1 + int(elapsed/sdkRefresh)
	if st.Minted > ideal+faults {
		t.Errorf("the fake minted %d tokens, want at most %d (ideal %d + 1 per fault)", st.Minted, ideal+faults, ideal)
	}
	if total.OK < total.Calls*9/10 {
		t.Errorf("only %d of %d SDK calls succeeded", total.OK, total.Calls)
	}
}

// sdkLeader is the identity holding the SDK fleet's lease ("" if none).
func sdkLeader(t *testing.T, client *redis.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v, err := client.Get(ctx, "sdk:leader").Result()
	if err != nil {
		return ""
	}
	id, _, _ := strings.Cut(v, "/")
	return id
}

// sdkUpstream serves the fake on 127.0.0.1 with co-wechat-api's getIp
// path (/cgi-bin/getcallbackip) answered by the fake's
// get_api_domain_ip, so the fake judges and counts those calls.
func sdkUpstream(t *testing.T, fake *wechattest.Server) string {
	t.Helper()
	h := fake.Handler()
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/cgi-bin/getcallbackip", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = wechat.EndpointDomainIP
		h.ServeHTTP(w, r2)
	})
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestGatewayServedOnItsOwnListener checks the wiring without Node: one
// replica serves WeChat's API on gateway.addr only, its metrics on the
// admin listener, and logs neither the credential nor the AppSecret.
func TestGatewayServedOnItsOwnListener(t *testing.T) {
	fake, secret, gw, admin, path := gatewayReplica(t, nil)
	p := startProc(t, "g1", baseEnv(), "serve", "--config", path)
	tokenPath := "/cgi-bin/token?grant_type=client_credential&appid=wxa&secret=" + sdkCredential
	var body string
	if !pollUntil(15*time.Second, 50*time.Millisecond, func() bool {
		body = httpBody("http://" + gw + tokenPath)
		return strings.Contains(body, "access_token")
	}) {
		t.Fatalf("the gateway never served a token: %q", body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	// The gateway's own token: WeChat's never leaves the refresher.
	if err := json.Unmarshal([]byte(body), &tok); err != nil || !strings.HasPrefix(tok.AccessToken, "tkgw_") ||
		strings.Contains(body, fake.CurrentToken("wxa")) || tok.ExpiresIn <= 0 {
		t.Fatalf("token reply %q: want a token of the gateway's own, never the fake's", body)
	}
	if got := httpBody("http://" + gw + "/cgi-bin/getcallbackip?access_token=" + tok.AccessToken); !strings.Contains(got, "ip_list") {
		t.Fatalf("business call through the gateway: %q", got)
	}
	// getticket comes from the replica's ticket cache though no app keeps
	// tickets warm: two SDK calls, one ticket minted upstream.
	for i := 0; i < 2; i++ {
		got := httpBody("http://" + gw + "/cgi-bin/ticket/getticket?type=jsapi&access_token=" + tok.AccessToken)
		if want := fake.CurrentTicket("wxa", wechat.TicketJSAPI); want == "" || !strings.Contains(got, `"ticket":"`+want+`"`) {
			t.Fatalf("getticket through the gateway: %q, want the fake's current ticket", got)
		}
	}
	if n := fake.TicketsMinted("wxa", wechat.TicketJSAPI); n != 1 {
		t.Errorf("two getticket calls through the gateway minted %d tickets upstream, want 1 (served from the ticket cache)", n)
	}
	if got := httpStatus("http://" + admin + tokenPath); got != http.StatusNotFound {
		t.Errorf("the admin listener answered the gateway's path with %d, want 404", got)
	}
	if got := httpBody("http://" + gw + "/metrics"); !strings.Contains(got, "40066") {
		t.Errorf("the gateway listener served %q for /metrics, want WeChat's 40066", got)
	}
	if m := httpBody("http://" + admin + "/metrics"); !strings.Contains(m, `tokenkeeper_gateway_requests_total{class="business",errcode="0",retry="none"} 1`) {
		t.Errorf("the admin /metrics lacks the gateway's business call:\n%s", m)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	for _, s := range []string{secret, sdkCredential, tok.AccessToken} {
		if strings.Contains(p.stderr.String()+p.stdout.String(), s) {
			t.Errorf("the replica's output holds a secret or a token")
		}
	}
}

// With http.tls set, the gateway's listener speaks TLS with the same
// certificate as the API's: an SDK pointed at https:// gets its token, and
// plain HTTP is refused.
func TestGatewayServedOverTLS(t *testing.T) {
	pki := redistest.NewPKI(t)
	_, _, gw, _, path := gatewayReplica(t, func(yaml, admin string) string {
		yaml = strings.Replace(yaml, "http:\n  addr: "+fmt.Sprintf("%q", admin)+"\n", "http:\n  addr: "+fmt.Sprintf("%q", admin)+"\n  tls: {cert_file: "+fmt.Sprintf("%q", pki.ServerCertFile)+", key_file: "+fmt.Sprintf("%q", pki.ServerKey)+"}\n", 1)
		if !strings.Contains(yaml, "tls: {cert_file") {
			t.Fatalf("the test's config has no http.tls:\n%s", yaml)
		}
		return yaml
	})
	p := startProc(t, "g1", baseEnv(), "serve", "--config", path)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.ClientTLS()}}
	tokenPath := "/cgi-bin/token?grant_type=client_credential&appid=wxa&secret=" + sdkCredential
	var body string
	if !pollUntil(15*time.Second, 50*time.Millisecond, func() bool {
		resp, err := client.Get("https://" + gw + tokenPath)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, io.LimitReader(resp.Body, 1<<20))
		body = b.String()
		return strings.Contains(body, `"access_token":"tkgw_`)
	}) {
		t.Fatalf("no token from the gateway over TLS: %q", body)
	}
	if got := httpBody("http://" + gw + tokenPath); strings.Contains(got, "access_token") {
		t.Errorf("plain HTTP to the TLS gateway answered a token: %q", got)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// TestReloadRevokesAGatewayCredential: a SIGHUP that removes a gateway
// credential cuts off the tokens it already holds at once (40001 from the
// gateway, never forwarded), and leaves another credential's working.
func TestReloadRevokesAGatewayCredential(t *testing.T) {
	const other = "second-gateway-credential-4567"
	var both string
	fake, _, gw, _, path := gatewayReplica(t, func(base, _ string) string {
		both = strings.Replace(base, "  credentials:\n", "  credentials:\n    - {name: other, key: \""+other+"\", apps: [wxa]}\n", 1)
		if both == base {
			t.Fatal("could not add a second credential to the config")
		}
		return both
	})
	p := startProc(t, "g1", baseEnv(), "serve", "--config", path)
	token := func(cred string) string {
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		var body string
		if !pollUntil(15*time.Second, 50*time.Millisecond, func() bool {
			body = httpBody("http://" + gw + "/cgi-bin/token?grant_type=client_credential&appid=wxa&secret=" + cred)
			return json.Unmarshal([]byte(body), &tok) == nil && tok.AccessToken != ""
		}) {
			t.Fatalf("no token for a credential: %q", body)
		}
		return tok.AccessToken
	}
	call := func(tok string) string {
		return httpBody("http://" + gw + "/cgi-bin/getcallbackip?access_token=" + tok)
	}
	revoked, kept := token(sdkCredential), token(other)
	if !strings.Contains(call(revoked), "ip_list") || !strings.Contains(call(kept), "ip_list") {
		t.Fatal("the credentials' tokens should work before the reload")
	}
	if err := os.WriteFile(path, []byte(strings.Replace(both, "    - {name: node-sdk, key: \""+sdkCredential+"\", apps: [wxa]}\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	var got string
	if !pollUntil(10*time.Second, 50*time.Millisecond, func() bool {
		got = call(revoked)
		return strings.Contains(got, `"errcode":40001`)
	}) {
		t.Fatalf("after the reload the revoked credential's token still answers %q", got)
	}
	okBefore := fake.Stats("wxa").BusinessOK
	if !strings.Contains(call(revoked), `"errcode":40001`) || !strings.Contains(call(kept), "ip_list") {
		t.Fatal("after the reload the revoked token works again, or the other credential's token stopped working")
	}
	if n := fake.Stats("wxa").BusinessOK - okBefore; n != 1 {
		t.Errorf("%d business calls reached WeChat after the reload, want 1 (the kept credential's): a revoked token was forwarded", n)
	}
	if body := httpBody("http://" + gw + "/cgi-bin/token?grant_type=client_credential&appid=wxa&secret=" + sdkCredential); !strings.Contains(body, "40125") {
		t.Errorf("a token fetch with the revoked credential: %q, want 40125", body)
	}
}

// gatewayReplica writes the config of one replica, g1, with the gateway on
// (sdkReplicaYAML, changed by edit, which is told the admin listener's
// address, when it is not nil), against a fresh
// redis-server and a fake that knows app wxa. It returns the fake, wxa's
// AppSecret, the gateway's and the admin listener's addresses, and the
// config's path.
func gatewayReplica(t *testing.T, edit func(yaml, admin string) string) (fake *wechattest.Server, secret, gw, admin, path string) {
	t.Helper()
	rs := redistest.Start(t)
	secret = fmt.Sprintf("sdk-secret-%d", time.Now().UnixNano())
	fake = wechattest.NewHandler(wechattest.WithApp("wxa", secret))
	t.Cleanup(fake.Close)
	upstream := sdkUpstream(t, fake)
	gw, admin = freeAddr(t), freeAddr(t)
	path = filepath.Join(t.TempDir(), "g.yaml")
	yaml := fmt.Sprintf(sdkReplicaYAML, "g1", rs.Addr(), upstream, secret, admin, testAPIKey, gw, sdkCredential)
	if edit != nil {
		yaml = edit(yaml, admin)
	}
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return fake, secret, gw, admin, path
}

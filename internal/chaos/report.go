package chaos

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is what a run saw. Every count of fetches and business answers
// is the upstream's (the fake's own counters and its listener's log);
// gaps and errors are the readers'.
type Report struct {
	Apps            int           `json:"apps"`
	Readers         int           `json:"readers"`
	Goroutines      int           `json:"goroutines_per_reader"`
	Replicas        int           `json:"replicas"`
	SDKGoroutines   int           `json:"gateway_goroutines_per_reader"`
	TokenLifetime   time.Duration `json:"token_lifetime_ns"`
	Grace           time.Duration `json:"grace_ns"`
	RefreshInterval time.Duration `json:"refresh_interval_ns"`
	UsableLife      time.Duration `json:"usable_life_ns"`
	Started         time.Time     `json:"started"`
	Ended           time.Time     `json:"ended"`
	Interrupted     bool          `json:"interrupted,omitempty"`
	WorkDir         string        `json:"work_dir"`

	Faults []*FaultRecord `json:"faults"`

	Fetches FetchReport `json:"fetches"`

	// Business is every business call the upstream answered; DeadOutside
	// those answered 40001/42001/40014 outside every data-loss window.
	Business    BusinessCounts   `json:"business"`
	DeadOutside []DeadCall       `json:"dead_outside_data_loss,omitempty"`
	DataLoss    []DataLossWindow `json:"data_loss_windows,omitempty"`

	ReaderView ReaderSummary `json:"readers_view"`
	// ReaderDead is every dead-token answer as the reader saw it: which
	// reader, and the token as its cache described it.
	ReaderDead []DeadCall `json:"readers_dead_calls,omitempty"`

	Leader LeaderReport `json:"leader"`

	QuotaUsed int `json:"quota_used"`

	// PoisonBound is how soon a poisoned record that a reader reads must
	// hold a new token; one nobody reads must by its key's end.
	PoisonBound time.Duration `json:"poison_bound_ns"`

	Violations []string `json:"violations"`
}

// FetchReport compares the tokens minted with the ideal.
type FetchReport struct {
	Minted     int        `json:"minted"`
	TokenCalls int        `json:"token_calls"`
	Ideal      int        `json:"ideal"`
	Allowed    int        `json:"allowed"` // ideal + one per fault that may force a refetch
	PerApp     []AppFetch `json:"per_app"`
	OverIdeal  int        `json:"apps_over_ideal"`
	UnderIdeal int        `json:"apps_under_ideal"` // late refreshes add up: fine while no app goes a usable life without a mint
	// LongestWithoutMint is the longest any app went without a new token.
	LongestWithoutMint time.Duration `json:"longest_without_mint_ns"`
	// Early mints (sooner than one refresh interval after the previous)
	// and those no fault explains.
	Early          int `json:"early"`
	EarlyUnexcused int `json:"early_unexcused"`
	OverAllowed    int `json:"apps_over_allowed"`
}

// AppFetch is one app's fetches against its ideal.
type AppFetch struct {
	App        string `json:"app"`
	Minted     int    `json:"minted"`
	TokenCalls int    `json:"token_calls"`
	Ideal      int    `json:"ideal"`
	MinIdeal   int    `json:"min_ideal"` // the ideal when the run ends just before a due refresh
	// LongestWithoutMint is the longest stretch between two mints (or from
	// the last to the end): beyond the usable life the app had no token.
	// Refreshes come a little after they fall due, so over a long run an
	// app may get fewer fetches than the ideal; this is what must hold.
	LongestWithoutMint     time.Duration `json:"longest_without_mint_ns"`
	LongestWithoutMintFrom time.Time     `json:"longest_without_mint_from,omitzero"`
	Allowance              int           `json:"allowance"`
	First                  time.Time     `json:"first_call,omitzero"`
	// Early counts mints sooner than one refresh interval after the
	// previous one; EarlyUnexcused those no fault of this app explains.
	Early          int         `json:"early"`
	EarlyUnexcused []TokenCall `json:"early_unexcused,omitempty"`
	// Calls is every token request, for runs of at most 50 apps.
	Calls []TokenCall `json:"calls,omitempty"`
}

// TokenCall is one token request as the fake's listener saw it.
type TokenCall struct {
	At      time.Time `json:"at"`
	Sender  string    `json:"sender,omitempty"`
	Outcome string    `json:"outcome"`
	Minted  int       `json:"minted"`
	// Early is a mint sooner than one refresh interval after the app's
	// previous one; Excuse names the fault it is charged to ("" = none).
	Early  bool   `json:"early,omitempty"`
	Excuse string `json:"excused_by,omitempty"`
}

// DataLossWindow is the stretch after a Redis restart and the dead
// calls the upstream answered in it.
type DataLossWindow struct {
	From     time.Time      `json:"from"`
	To       time.Time      `json:"to"`
	Counts   BusinessCounts `json:"counts"`
	FirstBad time.Time      `json:"first_dead,omitzero"`
	LastBad  time.Time      `json:"last_dead,omitzero"`
}

// ReaderSummary adds up what the readers reported.
type ReaderSummary struct {
	Calls         BusinessCounts   `json:"calls"`
	Retries       int64            `json:"retries"`
	RetriedOK     int64            `json:"retried_ok"`
	Invalidations int64            `json:"invalidations"`
	Errors        map[string]int64 `json:"errors"`
	ErrorSpans    map[string]Span  `json:"error_spans"`
	LongestGap    time.Duration    `json:"longest_gap_ns"`
	LongestGapAt  *Gap             `json:"longest_gap,omitempty"`
	LongestReader int              `json:"longest_gap_reader,omitempty"`
	FrozenGaps    int              `json:"gaps_of_frozen_readers"`
	AllFinal      bool             `json:"all_final"`
	Signatures    SignatureCounts  `json:"signatures"` // pages signed, and the upstream's verdict (signing.go)
	Gateway       GatewayCounts    `json:"gateway"`    // the SDK goroutines' calls through the gateways (sdk.go)
}

// addCounts adds src's counts into dst (made when nil: addCounts(nil, m)
// is a copy of m) and returns it.
func addCounts(dst, src map[string]int64) map[string]int64 {
	if dst == nil {
		dst = make(map[string]int64, len(src))
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// LeaderReport is the lease's history.
type LeaderReport struct {
	Transitions []Transition    `json:"transitions"`
	Takeovers   []time.Duration `json:"takeovers_ns"`
}

func (r *run) report(schedule []*FaultRecord, runOver, ended time.Time, readersFinal bool, interrupted bool) *Report {
	cfg := r.cfg
	rep := &Report{
		Apps: cfg.Apps, Readers: cfg.Readers, Goroutines: cfg.Goroutines, Replicas: cfg.Replicas, SDKGoroutines: cfg.gatewayGoroutines(),
		TokenLifetime: cfg.TokenLifetime, Grace: cfg.Grace, RefreshInterval: cfg.RefreshInterval(),
		UsableLife: cfg.UsableLife(),
		Started:    r.started, Ended: ended, Interrupted: interrupted, WorkDir: cfg.WorkDir, Faults: schedule,
	}
	for _, f := range schedule {
		if !f.At.IsZero() {
			f.Window = r.up.business(f.At, f.Ended)
		}
		if f.Takeover > 0 {
			rep.Leader.Takeovers = append(rep.Leader.Takeovers, f.Takeover)
		}
		if f.DataLoss && f.Applied {
			w := DataLossWindow{From: f.At, To: f.Ended}
			w.Counts = r.up.business(w.From, w.To)
			rep.DataLoss = append(rep.DataLoss, w)
		}
	}
	rep.Leader.Transitions = r.watch.history()
	for _, f := range schedule {
		if f.At.IsZero() && f.Detail == "" {
			f.Detail = "not reached: the run ended first"
		}
	}

	// Fetches per app against the ideal.
	allowance := map[string]int{}
	for _, f := range schedule {
		if f.Applied {
			for _, app := range f.Refetch {
				allowance[app]++
			}
		}
	}
	calls := r.up.tokenCalls()
	interval := cfg.RefreshInterval()
	for _, app := range AppIDs(cfg.Apps) {
		st := r.up.fake.Stats(app)
		af := AppFetch{App: app, Minted: st.Minted, TokenCalls: len(calls[app]), Allowance: allowance[app]}
		tcs := make([]TokenCall, 0, len(calls[app]))
		for _, c := range calls[app] {
			tcs = append(tcs, TokenCall{At: c.at, Sender: c.who, Outcome: c.outcome, Minted: c.minted})
		}
		af.EarlyUnexcused = chargeEarlyMints(tcs, app, schedule, interval)
		for _, c := range tcs {
			if c.Early {
				af.Early++
			}
		}
		if cfg.Apps <= 50 {
			af.Calls = tcs
		}
		rep.Fetches.Early += af.Early
		rep.Fetches.EarlyUnexcused += len(af.EarlyUnexcused)
		var prev time.Time
		for _, c := range tcs {
			if c.Minted == 0 {
				continue
			}
			if !prev.IsZero() && c.At.Sub(prev) > af.LongestWithoutMint {
				af.LongestWithoutMint, af.LongestWithoutMintFrom = c.At.Sub(prev), prev
			}
			prev = c.At
		}
		if !prev.IsZero() && runOver.Sub(prev) > af.LongestWithoutMint {
			af.LongestWithoutMint, af.LongestWithoutMintFrom = runOver.Sub(prev), prev
		}
		if af.LongestWithoutMint > rep.Fetches.LongestWithoutMint {
			rep.Fetches.LongestWithoutMint = af.LongestWithoutMint
		}
		if len(calls[app]) > 0 {
			af.First = calls[app][0].at
			af.Ideal, af.MinIdeal = ideal(ended.Sub(af.First), interval)
		}
		rep.Fetches.Minted += af.Minted
		rep.Fetches.TokenCalls += af.TokenCalls
		rep.Fetches.Ideal += af.Ideal
		rep.Fetches.Allowed += af.Ideal + af.Allowance
		if af.Minted > af.Ideal {
			rep.Fetches.OverIdeal++
		}
		if af.Minted > af.Ideal+af.Allowance {
			rep.Fetches.OverAllowed++
		}
		if af.Minted < af.MinIdeal {
			rep.Fetches.UnderIdeal++
		}
		rep.Fetches.PerApp = append(rep.Fetches.PerApp, af)
	}
	total := r.up.fake.Stats("")
	rep.QuotaUsed = total.QuotaUsed
	rep.Business = BusinessCounts{OK: int64(total.BusinessOK), Superseded: int64(total.BusinessSuperseded),
		Expired: int64(total.BusinessExpired), Invalid: int64(total.BusinessInvalid)}

	for _, d := range r.up.deadCalls() {
		inLoss := false
		for i := range rep.DataLoss {
			w := &rep.DataLoss[i]
			if !d.At.Before(w.From) && !d.At.After(w.To) {
				inLoss = true
				if w.FirstBad.IsZero() {
					w.FirstBad = d.At
				}
				w.LastBad = d.At
			}
		}
		if !inLoss {
			rep.DeadOutside = append(rep.DeadOutside, d)
		}
	}

	rep.PoisonBound = r.poisonBound()

	rs := &rep.ReaderView
	rs.Errors = map[string]int64{}
	rs.ErrorSpans = map[string]Span{}
	rs.AllFinal = readersFinal
	for _, rp := range r.readers {
		rp.mu.Lock()
		l := rp.last
		rs.Calls = rs.Calls.add(l.Calls)
		rs.Retries += l.Retries
		rs.RetriedOK += l.RetriedOK
		rs.Invalidations += l.Invalidations
		rs.Signatures = rs.Signatures.add(l.Signatures)
		rs.Gateway = rs.Gateway.add(l.Gateway)
		rs.Errors = addCounts(rs.Errors, l.Errors)
		for k, v := range l.ErrorSpans {
			rs.ErrorSpans[k] = rs.ErrorSpans[k].merge(v)
		}
		rep.ReaderDead = append(rep.ReaderDead, rp.dead...)
		for _, g := range rp.gaps {
			if r.frozen(rp.proc.pid(), g.Start, g.End) {
				rs.FrozenGaps++
				continue
			}
			if g.Took > rs.LongestGap {
				g := g
				rs.LongestGap, rs.LongestGapAt, rs.LongestReader = g.Took, &g, rp.id
			}
		}
		if l.MaxGap > rs.LongestGap && len(rp.gaps) == 0 {
			rs.LongestGap, rs.LongestReader = l.MaxGap, rp.id // below the per-gap report threshold
		}
		if rp.lines == 0 || l.Calls.OK == 0 {
			rep.Violations = append(rep.Violations, fmt.Sprintf("reader-%d: no business call answered ok (%d report lines; log %s)",
				rp.id, rp.lines, rp.proc.log.Name()))
		}
		rp.mu.Unlock()
	}
	sort.Slice(rep.ReaderDead, func(i, j int) bool { return rep.ReaderDead[i].At.Before(rep.ReaderDead[j].At) })
	rep.chargeWindows(calls, interval)
	rep.Violations = append(rep.Violations, rep.check(cfg)...)
	rep.Violations = append(rep.Violations, rs.Signatures.violations()...)
	rep.Violations = append(rep.Violations, rs.Gateway.violations(rep.SDKGoroutines > 0)...)
	return rep
}

// inDataLoss reports whether t falls in a data-loss window.
func (rep *Report) inDataLoss(t time.Time) bool {
	for _, w := range rep.DataLoss {
		if !t.Before(w.From) && !t.After(w.To) {
			return true
		}
	}
	return false
}

// chargeWindows counts, for every fault, the dead-token answers the
// readers saw in its window (outside data-loss windows) that concern it;
// and
// for every poisoned record the mints from its write to the window's end
// against the refreshes due then.
func (rep *Report) chargeWindows(calls map[string][]tokenCall, interval time.Duration) {
	for _, f := range rep.Faults {
		if f.At.IsZero() || !f.Applied {
			continue
		}
		for _, d := range rep.ReaderDead {
			if !d.At.Before(f.At) && !d.At.After(f.Ended) && !rep.inDataLoss(d.At) && f.concerns(d) {
				f.Dead++
				if f.DeadByReader == nil {
					f.DeadByReader = map[int]int{}
				}
				f.DeadByReader[d.Reader]++
			}
		}
		for _, rec := range f.Poison {
			if rec.Written.IsZero() {
				continue
			}
			var prev time.Time
			rec.Mints = 0
			for _, c := range calls[rec.App] {
				switch {
				case c.minted == 0:
				case c.at.Before(rec.Written):
					prev = c.at
				case !c.at.After(f.Ended):
					rec.Mints += c.minted
				}
			}
			rec.Ideal = duesIn(prev, rec.Written, f.Ended, interval)
			rec.OtherFaults = 0
			for _, g := range rep.Faults {
				if g != f && g.Applied && slices.Contains(g.Refetch, rec.App) && !g.At.After(f.Ended) && !g.Ended.Before(rec.Written) {
					rec.OtherFaults++
				}
			}
		}
	}
}

// duesIn counts the refreshes that fall due in [from, to] for an app last
// minted at prev (none if it never was): one every interval after prev.
func duesIn(prev, from, to time.Time, interval time.Duration) int {
	if prev.IsZero() || interval <= 0 {
		return 0
	}
	n := 0
	for due := prev.Add(interval); !due.After(to) && n < 1000; due = due.Add(interval) {
		if !due.Before(from.Add(-earlySlack)) {
			n++
		}
	}
	return n
}

// earlySlack absorbs the few milliseconds between a client's send time
// (from which tokencache counts) and the fake's receipt.
const earlySlack = 500 * time.Millisecond

// chargeEarlyMints marks every mint that came sooner than one refresh
// interval after the app's previous mint, and charges each to a distinct
// applied fault that may force this app to refetch and whose window holds
// it: one refetch per fault, as the ideal allows. It returns the early
// mints no fault explains.
func chargeEarlyMints(calls []TokenCall, app string, schedule []*FaultRecord, interval time.Duration) []TokenCall {
	used := map[*FaultRecord]bool{}
	var unexcused []TokenCall
	var prev time.Time
	for i := range calls {
		c := &calls[i]
		for m := 0; m < c.Minted; m++ {
			if !prev.IsZero() && c.At.Sub(prev) < interval-earlySlack {
				c.Early = true
				excuse := ""
				for _, f := range schedule {
					if f.Applied && !used[f] && slices.Contains(f.Refetch, app) && !c.At.Before(f.At) && !c.At.After(f.Ended) {
						used[f] = true
						f.EarlyMints++
						excuse = f.Kind
						break
					}
				}
				if excuse == "" {
					unexcused = append(unexcused, *c)
				} else if c.Excuse == "" {
					c.Excuse = excuse
				} else {
					c.Excuse += ", " + excuse
				}
			}
			prev = c.At
		}
	}
	return unexcused
}

// ideal is how many fetches one perfect process makes for an app in d: the
// first, then one per refresh interval. min is one less when d ends within
// two seconds after a refresh fell due, which a real refresh may miss by
// a hair.
func ideal(d, interval time.Duration) (n, min int) {
	if d < 0 {
		return 0, 0
	}
	n = int(d/interval) + 1
	min = n
	if d%interval < 2*time.Second && n > 1 {
		min = n - 1
	}
	return n, min
}

// check lists the invariants the run broke.
func (rep *Report) check(cfg *Config) []string {
	var v []string
	faulty := len(rep.Faults) > 0
	for _, f := range rep.Faults {
		if !f.Applied && !(f.Kind == FaultLeaderKill && rep.Replicas == 0) {
			v = append(v, fmt.Sprintf("fault %s at %v was not applied: %s", f.Kind, f.Planned, f.Detail))
		}
	}
	for _, af := range rep.Fetches.PerApp {
		if af.TokenCalls == 0 {
			v = append(v, fmt.Sprintf("app %s: never fetched", af.App))
			continue
		}
		if af.Minted > af.Ideal+af.Allowance {
			v = append(v, fmt.Sprintf("app %s: %d tokens minted, more than the ideal %d + %d for faults that may force a refetch",
				af.App, af.Minted, af.Ideal, af.Allowance))
		}
		if len(af.EarlyUnexcused) > 0 {
			var at []string
			for i, c := range af.EarlyUnexcused {
				if i == 10 {
					at = append(at, fmt.Sprintf("... and %d more (the report lists every token request)", len(af.EarlyUnexcused)-i))
					break
				}
				var in []string
				for _, f := range rep.Faults {
					if f.Applied && slices.Contains(f.Refetch, af.App) && !c.At.Before(f.At) && !c.At.After(f.Ended) {
						in = append(in, fmt.Sprintf("%s of t=%.2fs, already charged with %d", f.Kind, f.At.Sub(rep.Started).Seconds(), f.EarlyMints))
					}
				}
				where := "no fault that may force this app to refetch was in progress"
				if len(in) > 0 {
					where = "inside the window of " + strings.Join(in, "; ")
				}
				at = append(at, fmt.Sprintf("t=%.2fs by %s (%s)", c.At.Sub(rep.Started).Seconds(), c.Sender, where))
			}
			v = append(v, fmt.Sprintf("app %s: %d token(s) minted less than a refresh interval after the previous one with no fault left to explain them: %s",
				af.App, len(af.EarlyUnexcused), strings.Join(at, ", ")))
		}
		if af.LongestWithoutMint > rep.UsableLife {
			v = append(v, fmt.Sprintf("app %s: no token minted for %v from t=%.2fs, longer than a token's usable life %v: a refresh was missed",
				af.App, af.LongestWithoutMint.Round(time.Millisecond), af.LongestWithoutMintFrom.Sub(rep.Started).Seconds(), rep.UsableLife))
		}
	}
	for _, f := range rep.Faults {
		if !f.Applied || f.DataLoss {
			continue
		}
		at := fmt.Sprintf("fault %s at t=%.2fs", f.Kind, f.At.Sub(rep.Started).Seconds())
		if f.Dead > 0 {
			v = append(v, fmt.Sprintf("%s: %d business call(s) on a dead token in its window (to t=%.2fs)%s",
				at, f.Dead, f.Ended.Sub(rep.Started).Seconds(), byReader(f.DeadByReader)))
		}
		for _, rec := range f.Poison {
			if rec.Error != "" {
				continue
			}
			what := fmt.Sprintf("%s: app %s, mutation %s", at, rec.App, rec.Mutation)
			// A corrupt record is replaced as soon as a process needs the app:
			// within PoisonBound if a reader reads it, and by its key's end
			// at the latest (the leader's refresh is due before then). With
			// a thousand apps some are read by nobody for a while.
			if bound := max(rep.PoisonBound, rec.TTL+time.Second); rec.Replaced.IsZero() || rec.Replaced.Sub(rec.Written) > bound {
				v = append(v, fmt.Sprintf("%s: the corrupt record was not replaced by a new token within %v (%s)", what, bound, rec.fate()))
			}
			if rec.Mints > rec.Ideal+1+rec.OtherFaults {
				v = append(v, fmt.Sprintf("%s: %d tokens minted from the poison to the window's end, more than the ideal %d + 1 for the poison + %d for other faults",
					what, rec.Mints, rec.Ideal, rec.OtherFaults))
			}
		}
	}
	if n := len(rep.DeadOutside); n > 0 {
		first, last := rep.DeadOutside[0], rep.DeadOutside[n-1]
		v = append(v, fmt.Sprintf("%d business calls answered with a dead token outside any data-loss window (first %s errcode %d token %s, last %s errcode %d)",
			n, first.At.Format("15:04:05.000"), first.Code, first.Token, last.At.Format("15:04:05.000"), last.Code))
	}
	if dead := rep.Business.Dead(); !faulty && dead > 0 {
		v = append(v, fmt.Sprintf("no faults, yet the upstream answered %d business calls on a dead token", dead))
	}
	return v
}

// byReader describes the readers' view of dead calls: "; readers saw
// them: reader-3 x5, reader-7 x1".
func byReader(m map[int]int) string {
	if len(m) == 0 {
		return ""
	}
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("reader-%d x%d", id, m[id]))
	}
	return "; readers saw them: " + strings.Join(parts, ", ")
}

// fate says what became of a poisoned record, with offsets from its write.
func (rec *PoisonedRecord) fate() string {
	var parts []string
	if !rec.Replaced.IsZero() {
		parts = append(parts, fmt.Sprintf("new token after %v", rec.Replaced.Sub(rec.Written).Round(time.Millisecond)))
	} else {
		parts = append(parts, "never replaced by a new token")
	}
	if !rec.Gone.IsZero() {
		parts = append(parts, fmt.Sprintf("key gone after %v", rec.Gone.Sub(rec.Written).Round(time.Millisecond)))
	}
	if rec.Rewrites > 0 {
		parts = append(parts, fmt.Sprintf("rewritten %d time(s) keeping its token", rec.Rewrites))
	}
	parts = append(parts, fmt.Sprintf("TTL %v", rec.TTL.Round(time.Millisecond)))
	return strings.Join(parts, ", ")
}

// WriteText prints the report for a human.
func (rep *Report) WriteText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	off := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("t=%.2fs", t.Sub(rep.Started).Seconds())
	}
	p("== chaos report ==")
	p("run: %v, %d apps, %d readers x %d goroutines, %d refresher replicas; tokens %v, grace %v, refresh every %v%s",
		rep.Ended.Sub(rep.Started).Round(time.Millisecond), rep.Apps, rep.Readers, rep.Goroutines, rep.Replicas,
		rep.TokenLifetime, rep.Grace, rep.RefreshInterval, map[bool]string{true: " (INTERRUPTED)", false: ""}[rep.Interrupted])
	p("")
	p("faults (%d):", len(rep.Faults))
	for _, f := range rep.Faults {
		status := "applied"
		if !f.Applied {
			status = "NOT APPLIED"
		}
		p("  %-9s %-24s %s%s: %s", off(f.At), f.Kind, status, appSuffix(f.App), f.Detail)
		if f.Target != "" {
			p("            target %s", f.Target)
		}
		refetch := fmt.Sprintf("%d app(s)", len(f.Refetch))
		if len(f.Refetch) <= 5 {
			refetch = fmt.Sprint(f.Refetch)
		}
		p("            window to %s: ok %d, 40001 %d, 42001 %d, 40014 %d (dead charged to it %d%s); may force a refetch of %s; early mints charged %d",
			off(f.Ended), f.Window.OK, f.Window.Superseded, f.Window.Expired, f.Window.Invalid, f.Dead, byReader(f.DeadByReader), refetch, f.EarlyMints)
		if x := f.Proxy; x != nil {
			p("            proxy: %d accepted, %d cut, %d refused, %d black-holed, %d bytes swallowed, %d subscribes, %d messages muted (%d for the app)",
				x.Accepted, x.Cut, x.Refused, x.BlackHoled, x.Swallowed, x.Subscribes, x.MutedMsgs, x.MutedApp)
		}
		if len(f.Superseded) > 0 {
			var uses []string
			for i, u := range f.Superseded {
				if i == 8 {
					uses = append(uses, "...")
					break
				}
				uses = append(uses, fmt.Sprintf("%s x%d (ok %d, dead %d; +%.2fs..+%.2fs)", u.Process, u.Calls, u.OK, u.Dead, u.First.Seconds(), u.Last.Seconds()))
			}
			p("            replaced token used after its successor's mint: %s", strings.Join(uses, ", "))
		}
		for _, rec := range f.Poison {
			if rec.Error != "" {
				p("            poison %s %s: NOT WRITTEN: %s", rec.App, rec.Mutation, rec.Error)
				continue
			}
			p("            poison %s %-24s %s; mints to the window's end %d (ideal %d, + %d for other faults)",
				rec.App, rec.Mutation, rec.fate(), rec.Mints, rec.Ideal, rec.OtherFaults)
		}
	}
	p("")
	fr := rep.Fetches
	p("upstream fetches: %d tokens minted (%d token requests); ideal %d, allowed with faults %d; apps over ideal %d, over allowed %d; early mints %d, unexplained %d",
		fr.Minted, fr.TokenCalls, fr.Ideal, fr.Allowed, fr.OverIdeal, fr.OverAllowed, fr.Early, fr.EarlyUnexcused)
	shown := 0
	for _, af := range fr.PerApp {
		if len(fr.PerApp) > 10 && af.Minted <= af.Ideal {
			continue
		}
		if shown++; shown > 20 {
			p("  ...")
			break
		}
		p("  %s: minted %d, token requests %d, ideal %d, + %d for faults", af.App, af.Minted, af.TokenCalls, af.Ideal, af.Allowance)
		if len(fr.PerApp) <= 5 {
			for i, c := range af.Calls {
				if i == 40 {
					p("      ... and %d more token requests (all in the JSON report)", len(af.Calls)-i)
					break
				}
				note := ""
				switch {
				case c.Early && c.Excuse != "":
					note = "early, charged to " + c.Excuse
				case c.Early:
					note = "EARLY, NO FAULT EXPLAINS IT"
				}
				p("      %s %-22s %-12s minted %d  %s", off(c.At), c.Sender, c.Outcome, c.Minted, note)
			}
		}
	}
	p("longest any app went without a new token: %v (usable life %v); apps under the ideal (late refreshes): %d",
		fr.LongestWithoutMint.Round(time.Millisecond), rep.UsableLife, fr.UnderIdeal)
	p("quota used: %d", rep.QuotaUsed)
	p("")
	b := rep.Business
	p("business calls (upstream): ok %d, 40001 %d, 42001 %d, 40014 %d", b.OK, b.Superseded, b.Expired, b.Invalid)
	p("  dead-token answers outside data-loss windows: %d", len(rep.DeadOutside))
	for i, d := range rep.DeadOutside {
		if i == 10 {
			p("  ...")
			break
		}
		p("    %s errcode %d token %s", off(d.At), d.Code, d.Token)
	}
	for i, d := range rep.ReaderDead {
		if i == 20 {
			p("  ...")
			break
		}
		p("    reader-%d %s app %s errcode %d token %s v%d handed out %s, fetched %s, usable until %s; last change message seen: %s",
			d.Reader, off(d.At), d.App, d.Code, d.Token, d.Version, off(d.HandedOut), off(d.FetchedAt), off(d.UsableUntil), d.Announced)
	}
	for _, w := range rep.DataLoss {
		p("  data-loss window %s..%s: ok %d, 40001 %d, 42001 %d, 40014 %d; dead answers from %s to %s (%v)",
			off(w.From), off(w.To), w.Counts.OK, w.Counts.Superseded, w.Counts.Expired, w.Counts.Invalid,
			off(w.FirstBad), off(w.LastBad), w.LastBad.Sub(w.FirstBad).Round(time.Millisecond))
	}
	rs := rep.ReaderView
	p("")
	p("readers: ok %d, 40001 %d, 42001 %d, 40014 %d; invalidations %d, retries %d (ok %d); all final reports: %v",
		rs.Calls.OK, rs.Calls.Superseded, rs.Calls.Expired, rs.Calls.Invalid, rs.Invalidations, rs.Retries, rs.RetriedOK, rs.AllFinal)
	p("  %s", rs.Signatures)
	if rep.SDKGoroutines > 0 {
		p("  %s", rs.Gateway)
	}
	if rs.LongestGapAt != nil {
		g := rs.LongestGapAt
		p("  longest without a live token: %v (reader-%d, app %s, %s..%s, %s)", rs.LongestGap.Round(time.Millisecond),
			rs.LongestReader, g.App, off(g.Start), off(g.End), g.Cause)
	} else {
		p("  longest without a live token: %v", rs.LongestGap.Round(time.Millisecond))
	}
	if rs.FrozenGaps > 0 {
		p("  (%d gaps of readers while they were frozen by SIGSTOP not counted)", rs.FrozenGaps)
	}
	keys := make([]string, 0, len(rs.Errors))
	for k := range rs.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sp := rs.ErrorSpans[k]
		p("  error %-46s %6d  (%s..%s)", k, rs.Errors[k], off(sp.First), off(sp.Last))
	}
	p("")
	p("leader transitions: %d", len(rep.Leader.Transitions))
	for _, t := range rep.Leader.Transitions {
		p("  %s %q -> %q", off(t.At), t.From, t.To)
	}
	var tk []string
	for _, d := range rep.Leader.Takeovers {
		tk = append(tk, d.Round(time.Millisecond).String())
	}
	p("takeovers after a leader fault: %s", strings.Join(tk, ", "))
	p("")
	if len(rep.Violations) == 0 {
		p("invariants: all held")
	} else {
		p("INVARIANTS BROKEN (%d):", len(rep.Violations))
		for _, s := range rep.Violations {
			p("  - %s", s)
		}
	}
	p("logs: %s", rep.WorkDir)
}

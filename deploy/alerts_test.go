package deploy

import (
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
)

const alertsFile = "prometheus/alerts.yml"

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// closedLabels are labels whose values are a fixed set that the metrics
// feeding in exported() brings out in full (fetches_total's result is
// checked through metrics' own mapping instead, see keptFetchResult).
var closedLabels = map[string]string{
	metrics.Namespace + "_cache_revalidations_total": "result",
	metrics.Namespace + "_invalidations_total":       "outcome",
}

// mustAlertOn are the signals an operator needs paged on: each is used by
// at least one alert.
var mustAlertOn = []string{
	metrics.Namespace + "_leader",
	metrics.Namespace + "_fetches_total",
	metrics.Namespace + "_token_usable_seconds",
	metrics.Namespace + "_tokens_killed_outside_total",
	metrics.Namespace + "_cache_revalidations_total",
	metrics.Namespace + "_quota_used_today",
	metrics.Namespace + "_http_requests_total",
}

// resolve maps a series name to its family: histograms' _bucket, _sum and
// _count series belong to the histogram.
func resolve(fams map[string]family, name string) (string, family, bool) {
	if f, ok := fams[name]; ok {
		return name, f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(name, suffix)
		if f, ok := fams[base]; found && ok && (f.typ == dto.MetricType_HISTOGRAM || f.typ == dto.MetricType_SUMMARY) {
			return base, f, true
		}
	}
	return "", family{}, false
}

// alternatives splits a regex matcher made of plain alternatives
// ("quota|budget"); ok is false for any other regex.
func alternatives(re string) ([]string, bool) {
	if !regexp.MustCompile(`^[a-z_]+(\|[a-z_]+)*$`).MatchString(re) {
		return nil, false
	}
	return strings.Split(re, "|"), true
}

// TestAlertRules parses deploy/prometheus/alerts.yml with Prometheus's own
// rule loader (unknown fields rejected, PromQL and templates checked) and
// checks every expression against what internal/metrics really exports:
// each series name exists, each label a matcher or a "by" names is one the
// metric has (or a target label), closed label values are values the
// refresher emits, and rate()/increase() only see counters. Every alert
// has a severity, a summary and a description.
func TestAlertRules(t *testing.T) {
	fams := exported(t)
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Errorf("rulefmt: %v", err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	used := map[string]bool{}
	names := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s: only alerting rules belong here (record %q)", where, r.Record)
				continue
			}
			if names[r.Alert] || !strings.HasPrefix(r.Alert, "Tokenkeeper") {
				t.Errorf("%s: duplicate, or not named Tokenkeeper...", where)
			}
			names[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", where, s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			checkExpr(t, where, expr, fams, used)
		}
	}
	for _, m := range mustAlertOn {
		if !used[m] {
			t.Errorf("no alert uses %s", m)
		}
	}
}

func checkExpr(t *testing.T, where string, expr parser.Expr, fams map[string]family, used map[string]bool) {
	t.Helper()
	var own int
	parser.Inspect(expr, func(node parser.Node, path []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			name := n.Name
			if name == "up" {
				return nil // Prometheus's own
			}
			base, f, ok := resolve(fams, name)
			if !ok {
				t.Errorf("%s: %s is not a metric internal/metrics exports", where, name)
				return nil
			}
			own++
			used[base] = true
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					continue
				}
				if !slices.Contains(f.labels, m.Name) && !slices.Contains(targetLabels, m.Name) {
					t.Errorf("%s: %s has no label %q (it has %v)", where, base, m.Name, f.labels)
					continue
				}
				checkValues(t, where, base, f, m)
			}
		case *parser.Call:
			switch n.Func.Name {
			case "rate", "increase", "irate", "resets":
				ms, ok := n.Args[0].(*parser.MatrixSelector)
				if !ok {
					return nil
				}
				vs := ms.VectorSelector.(*parser.VectorSelector)
				if _, f, ok := resolve(fams, vs.Name); ok && f.typ != dto.MetricType_COUNTER && f.typ != dto.MetricType_HISTOGRAM {
					t.Errorf("%s: %s() of %s, which is a %v, not a counter", where, n.Func.Name, vs.Name, f.typ)
				}
			}
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			var have []string
			parser.Inspect(n.Expr, func(inner parser.Node, _ []parser.Node) error {
				if vs, ok := inner.(*parser.VectorSelector); ok {
					if _, f, ok := resolve(fams, vs.Name); ok {
						have = append(have, f.labels...)
					}
				}
				return nil
			})
			for _, l := range n.Grouping {
				if !slices.Contains(have, l) && !slices.Contains(targetLabels, l) {
					t.Errorf("%s: by (%s): no series aggregated there has that label", where, l)
				}
			}
		}
		return nil
	})
	if own == 0 {
		t.Errorf("%s uses no tokenkeeper metric", where)
	}
}

// checkValues: a matcher on a closed label names only values the
// refresher emits.
func checkValues(t *testing.T, where, base string, f family, m *labels.Matcher) {
	t.Helper()
	var vals []string
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		vals = []string{m.Value}
	case labels.MatchRegexp, labels.MatchNotRegexp:
		alts, ok := alternatives(m.Value)
		if !ok {
			if base == metrics.Namespace+"_fetches_total" && m.Name == "result" || closedLabels[base] == m.Name {
				t.Errorf("%s: %s{%s}: write closed label values as plain alternatives (a|b), so they can be checked", where, base, m)
			}
			return
		}
		vals = alts
	}
	for _, v := range vals {
		switch {
		case base == metrics.Namespace+"_fetches_total" && m.Name == "result":
			if !keptFetchResult(t, v) {
				t.Errorf("%s: %s{result=%q}: the refresher never reports that result", where, base, v)
			}
		case closedLabels[base] == m.Name:
			if !slices.Contains(f.values[m.Name], v) {
				t.Errorf("%s: %s{%s=%q}: the refresher reports only %v", where, base, m.Name, v, f.values[m.Name])
			}
		}
	}
}

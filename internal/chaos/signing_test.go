package chaos

import (
	"strings"
	"testing"
)

func TestSignatureCountsFlagDeadTickets(t *testing.T) {
	a := SignatureCounts{OK: 3, NotSigned: map[string]int64{"redis unavailable": 2}}
	b := SignatureCounts{OK: 1, Dead: 1, DeadAt: []string{"page x"}, NotSigned: map[string]int64{"redis unavailable": 1}}
	sum := a.add(b)
	if sum.OK != 4 || sum.Dead != 1 || sum.NotSigned["redis unavailable"] != 3 || len(sum.DeadAt) != 1 {
		t.Fatalf("sum %+v", sum)
	}
	if v := sum.violations(); len(v) != 1 || !strings.Contains(v[0], "1 page(s) signed with a dead jsapi ticket") {
		t.Errorf("violations %q, want the dead-ticket signature flagged", v)
	}
	if v := a.violations(); len(v) != 0 {
		t.Errorf("no dead signature: violations %q, want none (not signing is availability, not safety)", v)
	}
	if v := (SignatureCounts{Late: 5}).violations(); len(v) != 1 || !strings.Contains(v[0], "did not really run") {
		t.Errorf("nothing verified: %q", v)
	}
	if v := (SignatureCounts{OK: 1, Invalid: 1}).violations(); len(v) != 1 {
		t.Errorf("a signature matching no ticket must be flagged: %q", v)
	}
}

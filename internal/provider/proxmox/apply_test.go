package proxmox

import (
	"context"
	"testing"

	"github.com/homelab-dev/homelab/internal/pvesim"
)

func checkViolations(t *testing.T, srv *pvesim.Server) {
	t.Helper()
	for _, v := range srv.Violations() {
		t.Errorf("schema violation: %s", v)
	}
}

func TestApplyConverges(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	pl, err := converge(ctx, p, f.lab, f.arts, false)
	if err != nil {
		t.Fatalf("first apply: %v\nplan:\n%s", err, describe(pl))
	}
	checkViolations(t, f.srv)
	second, err := planFor(ctx, p, f.lab, f.arts, false)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Empty() {
		t.Fatalf("second plan is not empty:\n%s", describe(second))
	}
	// A second apply is a no-op: observing and planning again costs a
	// fixed, small number of calls, and nothing is changed.
	f.srv.ResetCalls()
	if _, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	calls := f.srv.Calls()
	for _, c := range calls {
		if c.Method != "GET" {
			t.Errorf("second apply changed something: %s %s", c.Method, c.Path)
		}
	}
	if len(calls) > 20 {
		t.Errorf("second apply made %d API calls, want at most 20: %v", len(calls), f.srv.CallCounts())
	}
	checkViolations(t, f.srv)
}

package verify

import (
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/spec"
)

func referenceLab(t *testing.T) *spec.Lab {
	t.Helper()
	lab, _, err := spec.Parse("lab.yaml", spec.Reference(spec.ProviderLocal))
	if err != nil {
		t.Fatalf("parsing the reference lab: %v", err)
	}
	return lab
}

// TestExpectFollowsThePolicy spells out DESIGN.md's table cell by cell.
func TestExpectFollowsThePolicy(t *testing.T) {
	for _, tc := range []struct {
		zone  Zone
		class Class
		want  bool
	}{
		{ZoneInternet, ClassFrontend, true},
		{ZoneInternet, ClassAdmin, false},
		{ZoneInternet, ClassIngress, false},
		{ZoneInternet, ClassLBAdmin, false},
		{ZoneVPN, ClassAdmin, true},
		{ZoneVPN, ClassIngress, false},
		{ZoneVPN, ClassLBAdmin, false},
		{ZoneLB, ClassAdmin, false},
		{ZoneLB, ClassIngress, true},
		{ZoneLB, ClassEgress, false},
		{ZoneManager, ClassAdmin, true},
		{ZoneManager, ClassEgress, true},
		{ZoneManager, ClassIngress, false},
		{ZoneNode, ClassAdmin, true},
		{ZoneNode, ClassIngress, true},
		{ZoneNode, ClassEgress, true},
	} {
		got, why, ok := Expect(tc.zone, tc.class)
		if !ok || got != tc.want || why == "" {
			t.Errorf("Expect(%s, %s) = %v, %q, %v; want %v with a reason", tc.zone, tc.class, got, why, ok, tc.want)
		}
	}
	if _, _, ok := Expect(ZoneInternet, ClassEgress); ok {
		t.Errorf("Expect(internet, egress) has an opinion; the policy has none")
	}
}

func TestPlanReference(t *testing.T) {
	r, err := Plan(referenceLab(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range r.Vantages {
		names = append(names, v.Name)
	}
	if got, want := strings.Join(names, ","), "internet,vpn-client,manager,worker-1,lb"; got != want {
		t.Errorf("vantages = %s, want %s", got, want)
	}
	kinds := map[Kind]int{}
	for _, p := range r.Probes {
		kinds[p.Kind]++
		if p.From == "lb" && strings.HasPrefix(p.To, "lb ") {
			t.Errorf("the lb probes itself: %s", p.To)
		}
		if p.From == "vpn-client" && strings.Contains(p.To, "api") && p.Kind != KindTunnel {
			t.Errorf("vpn-client -> %s is a %s probe, want a tunnel probe", p.To, p.Kind)
		}
	}
	for _, k := range []Kind{KindTCP, KindHTTP, KindTunnel, KindUDP} {
		if kinds[k] == 0 {
			t.Errorf("no %s probe in the plan", k)
		}
	}
}

func TestPrintMarksMismatches(t *testing.T) {
	r, err := Plan(referenceLab(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range r.Probes {
		r.Probes[i].Got = r.Probes[i].Expect
	}
	r.Probes[0].Got = !r.Probes[0].Expect
	var b strings.Builder
	r.Print(&b)
	out := b.String()
	if !strings.Contains(out, "stand-ins") || !strings.Contains(out, "1 differ") || !strings.Contains(out, "!") {
		t.Errorf("Print output misses the stand-in note or the mismatch:\n%s", out)
	}
}

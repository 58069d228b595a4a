package talos

import (
	"testing"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// TestReferenceLab runs the reference lab of "homelab init", loaded by
// the real spec loader, through MachineConfigs and machinery's validation.
func TestReferenceLab(t *testing.T) {
	for _, p := range []spec.Provider{spec.ProviderLocal, spec.ProviderProxmox} {
		t.Run(string(p), func(t *testing.T) {
			lab, _, err := spec.Parse("lab.yaml", spec.Reference(p))
			if err != nil {
				t.Fatalf("loading the reference lab: %v", err)
			}
			b := &secrets.Bundle{Talos: testBundle(t).Talos, TalosAdmin: testBundle(t).TalosAdmin}
			nodes, _, err := MachineConfigs(lab, b)
			if err != nil {
				t.Fatalf("MachineConfigs: %v", err)
			}
			want := lab.Cluster.ControlPlanes.Count + lab.Cluster.Workers.Count
			if len(nodes) != want || want == 0 {
				t.Fatalf("MachineConfigs gave %d configs, want %d", len(nodes), want)
			}
			for _, n := range nodes {
				if err := Validate(n.Data); err != nil {
					t.Errorf("Validate(%s): %v", n.Machine.Name, err)
				}
			}
		})
	}
}

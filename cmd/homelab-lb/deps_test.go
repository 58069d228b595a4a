package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the load balancer binary small: it must not link the
// Talos or Proxmox libraries, nor the lab planning packages.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH; run this test where the Go toolchain is installed")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/siderolabs/talos",
		"github.com/luthermonson/go-proxmox",
		"github.com/homelab-dev/homelab/internal/spec",
		"github.com/homelab-dev/homelab/internal/render",
		"github.com/homelab-dev/homelab/internal/provider",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned %d packages; expected the real dependency list", len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("homelab-lb depends on %s", d)
			}
		}
	}
}

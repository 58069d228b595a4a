package vpn

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the daemon a daemon: it knows nothing of the spec, the
// planner or the providers, and does not link Talos or gRPC.
func TestDeps(t *testing.T) {
	checkDeps(t, "github.com/homelab-dev/homelab/internal/vpn", []string{
		"github.com/homelab-dev/homelab/internal/",
		"github.com/siderolabs/",
		"google.golang.org/grpc",
		"github.com/luthermonson/go-proxmox",
	}, nil)
}

// checkDeps fails if pkg depends on a package starting with one of
// forbidden, other than those in allowed.
func checkDeps(t *testing.T, pkg string, forbidden, allowed []string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to list dependencies")
	}
	out, err := exec.Command(gobin, "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if dep == pkg {
			continue
		}
		bad := false
		for _, f := range forbidden {
			bad = bad || strings.HasPrefix(dep, f)
		}
		for _, a := range allowed {
			bad = bad && dep != a
		}
		if bad {
			t.Errorf("%s depends on %s", pkg, dep)
		}
	}
}

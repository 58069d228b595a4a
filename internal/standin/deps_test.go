package standin

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the stand-in apart from the lab's planning code: it only
// reuses the load balancer's PROXY protocol parser.
func TestDeps(t *testing.T) {
	checkDeps(t, "github.com/homelab-dev/homelab/internal/standin", []string{
		"github.com/homelab-dev/homelab/internal/",
		"golang.zx2c4.com/wireguard",
		"github.com/luthermonson/go-proxmox",
	}, []string{"github.com/homelab-dev/homelab/internal/lb/proxyproto"})
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

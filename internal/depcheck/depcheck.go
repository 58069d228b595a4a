// Package depcheck is a test helper: it fails a test when a package links
// what it must not (the daemons that run in small containers stay small
// and free of the planning code).
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// Check fails t if pkg depends on a package whose path starts with one of
// forbidden, other than those listed in allowed. It skips when the go
// command is not on the PATH.
func Check(t testing.TB, pkg string, forbidden, allowed []string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to list dependencies")
	}
	out, err := exec.Command(gobin, "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 2 {
		t.Fatalf("go list -deps %s listed %d packages: not a real dependency list", pkg, len(deps))
	}
	for _, dep := range deps {
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

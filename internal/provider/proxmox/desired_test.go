package proxmox

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/homelab-dev/homelab/internal/pvesim"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestDesiredGolden pins the resources of the reference lab: types, names,
// attributes, dependencies and marks.
func TestDesiredGolden(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	rs, err := p.Desired(f.lab, f.arts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	// The install hash depends on the test binary's path content only;
	// it is stable because fakeBinary writes fixed bytes.
	golden := filepath.Join("testdata", "desired.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestDesiredGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Desired() differs from %s; run with -update and review the diff:\n%s", golden, got)
	}
}

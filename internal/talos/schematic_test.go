package talos

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestSchematicID checks IDs the Image Factory itself computes: the empty
// schematic's ID is in image-factory's own tests, and the qemu-guest-agent
// schematic's ID is the one Talos's Proxmox documentation shows.
func TestSchematicID(t *testing.T) {
	for _, tt := range []struct {
		name string
		exts []string
		want string
	}{
		{"empty", nil, "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"},
		{"qemu-guest-agent", []string{"siderolabs/qemu-guest-agent"}, "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"},
		{"duplicates collapse", []string{"siderolabs/qemu-guest-agent", "siderolabs/qemu-guest-agent"}, "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lab := &spec.Lab{Cluster: spec.Cluster{Extensions: tt.exts}}
			_, id, err := Schematic(lab)
			if err != nil {
				t.Fatal(err)
			}
			if id != tt.want {
				t.Errorf("Schematic(%q) ID = %s, want %s", tt.exts, id, tt.want)
			}
		})
	}
}

func TestSchematicGolden(t *testing.T) {
	lab := &spec.Lab{Cluster: spec.Cluster{Extensions: []string{
		"siderolabs/util-linux-tools", "siderolabs/qemu-guest-agent", "siderolabs/iscsi-tools",
	}}}
	yaml, id, err := Schematic(lab)
	if err != nil {
		t.Fatal(err)
	}
	got := append(yaml, "# id: "+id+"\n"...)
	golden := filepath.Join("testdata", "schematic.golden")
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
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("Schematic() =\n%s\nwant (%s)\n%s", got, golden, want)
	}

	// The order of extensions in the spec does not change the schematic.
	lab.Cluster.Extensions = []string{"siderolabs/iscsi-tools", "siderolabs/util-linux-tools", "siderolabs/qemu-guest-agent"}
	if _, id2, _ := Schematic(lab); id2 != id {
		t.Errorf("Schematic ID depends on extension order: %s != %s", id2, id)
	}
}

func TestSchematicRejects(t *testing.T) {
	for _, ext := range []string{"", "qemu-guest-agent", "siderolabs/Qemu", "a/b: c", "true", "siderolabs/x\n- y"} {
		lab := &spec.Lab{Cluster: spec.Cluster{Extensions: []string{ext}}}
		if _, _, err := Schematic(lab); err == nil || !strings.Contains(err.Error(), "cluster.extensions") {
			t.Errorf("Schematic(%q) error = %v, want a cluster.extensions error", ext, err)
		}
	}
}

func TestImageRefs(t *testing.T) {
	const id = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
	for _, version := range []string{"v1.13.9", "1.13.9"} {
		lab := &spec.Lab{Cluster: spec.Cluster{TalosVersion: version}}
		if got, want := InstallerImage(lab, id), "factory.talos.dev/installer/"+id+":v1.13.9"; got != want {
			t.Errorf("InstallerImage(%s) = %s, want %s", version, got, want)
		}
		if got, want := NocloudImageURL(lab, id), "https://factory.talos.dev/image/"+id+"/v1.13.9/nocloud-amd64.raw.xz"; got != want {
			t.Errorf("NocloudImageURL(%s) = %s, want %s", version, got, want)
		}
	}
}

package plan

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

func res(typ, name string, attrs map[string]string, deps ...string) Resource {
	return Resource{Type: typ, Name: name, Attrs: attrs, DependsOn: deps}
}

func actions(p *Plan) []string {
	var out []string
	for _, s := range p.Steps {
		out = append(out, string(s.Action)+" "+s.ID)
	}
	return out
}

func TestMake(t *testing.T) {
	bridge := res("bridge", "vmbr1", map[string]string{"cidr": "10.10.1.1/24"})
	vm := res("vm", "lab-cp-1", map[string]string{"memory": "3072", "disk": "20G"}, "bridge/vmbr1")
	vm.ForceNew = []string{"disk"}
	vm.HoldsData = true

	tests := []struct {
		name      string
		desired   []Resource
		observed  []Resource
		opts      Options
		want      []string
		unchanged int
		blocked   bool
	}{
		{
			name:    "from empty, dependencies first",
			desired: []Resource{vm, bridge},
			want:    []string{"create bridge/vmbr1", "create vm/lab-cp-1"},
		},
		{
			name:      "converged",
			desired:   []Resource{vm, bridge},
			observed:  []Resource{bridge, vm},
			unchanged: 2,
		},
		{
			name:     "observed extra attributes are ignored",
			desired:  []Resource{bridge},
			observed: []Resource{res("bridge", "vmbr1", map[string]string{"cidr": "10.10.1.1/24", "active": "1"})},
			want:     nil, unchanged: 1,
		},
		{
			name:      "drift is an in-place update",
			desired:   []Resource{vm, bridge},
			observed:  []Resource{bridge, res("vm", "lab-cp-1", map[string]string{"memory": "2048", "disk": "20G"}, "bridge/vmbr1")},
			want:      []string{"update vm/lab-cp-1"},
			unchanged: 1,
		},
		{
			name:      "force-new attribute on a data guest is blocked",
			desired:   []Resource{vm, bridge},
			observed:  []Resource{bridge, res("vm", "lab-cp-1", map[string]string{"memory": "3072", "disk": "10G"}, "bridge/vmbr1")},
			want:      []string{"replace vm/lab-cp-1"},
			unchanged: 1,
			blocked:   true,
		},
		{
			name:      "force-new allowed with the flag",
			desired:   []Resource{vm, bridge},
			observed:  []Resource{bridge, res("vm", "lab-cp-1", map[string]string{"memory": "3072", "disk": "10G"}, "bridge/vmbr1")},
			opts:      Options{AllowDataLoss: true},
			want:      []string{"replace vm/lab-cp-1"},
			unchanged: 1,
		},
		{
			name:     "destroy deletes dependents first",
			observed: []Resource{bridge, vm},
			want:     []string{"delete vm/lab-cp-1", "delete bridge/vmbr1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Make(tt.desired, tt.observed, tt.opts)
			if err != nil {
				t.Fatalf("Make: %v", err)
			}
			if diff := cmp.Diff(tt.want, actions(p)); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if p.Unchanged != tt.unchanged {
				t.Errorf("Unchanged = %d, want %d", p.Unchanged, tt.unchanged)
			}
			gotBlocked := false
			for _, s := range p.Steps {
				gotBlocked = gotBlocked || s.Blocked != ""
			}
			if gotBlocked != tt.blocked {
				t.Errorf("blocked = %v, want %v", gotBlocked, tt.blocked)
			}
		})
	}
}

func TestMakeErrors(t *testing.T) {
	tests := []struct {
		name    string
		desired []Resource
		want    string
	}{
		{"duplicate", []Resource{res("vm", "a", nil), res("vm", "a", nil)}, "resource vm/a is declared twice"},
		{"missing dependency", []Resource{res("vm", "a", nil, "bridge/x")}, "resource vm/a depends on bridge/x, which is not part of the lab"},
		{"cycle", []Resource{res("vm", "a", nil, "vm/b"), res("vm", "b", nil, "vm/a")}, "resources depend on each other in a cycle: vm/a, vm/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Make(tt.desired, nil, Options{})
			if err == nil || err.Error() != tt.want {
				t.Errorf("Make error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestMakeDeterministic(t *testing.T) {
	var desired []Resource
	for _, n := range []string{"e", "c", "a", "d", "b"} {
		desired = append(desired, res("vm", n, map[string]string{"x": n}))
	}
	first, _ := Make(desired, nil, Options{})
	for i := 0; i < 20; i++ {
		again, _ := Make(desired, nil, Options{})
		if diff := cmp.Diff(actions(first), actions(again)); diff != "" {
			t.Fatalf("plan order changed between runs:\n%s", diff)
		}
	}
}

func TestPrintGolden(t *testing.T) {
	vm := res("vm", "lab-worker-1", map[string]string{"memory": "4096", "disk": "80G", "tags": "homelab lab"}, "bridge/vmbr2")
	vm.ForceNew = []string{"disk"}
	vm.HoldsData = true
	desired := []Resource{
		res("bridge", "vmbr2", map[string]string{"cidr": "10.10.2.1/24", "comment": "homelab:lab apps"}),
		vm,
		res("lxc", "lab-lb", map[string]string{"memory": "256"}),
	}
	observed := []Resource{
		res("lxc", "lab-lb", map[string]string{"memory": "512"}),
		res("lxc", "lab-old", map[string]string{"memory": "256"}),
		res("vm", "lab-worker-1", map[string]string{"memory": "4096", "disk": "40G", "tags": "homelab lab"}),
	}
	p, err := Make(desired, observed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var text, js bytes.Buffer
	if err := p.Print(&text); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "plan.txt", text.Bytes())
	golden(t, "plan.json", js.Bytes())

	empty, _ := Make(nil, nil, Options{})
	var e bytes.Buffer
	_ = empty.Print(&e)
	if !strings.HasPrefix(e.String(), "No changes") {
		t.Errorf("empty plan prints %q, want it to start with No changes", e.String())
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}

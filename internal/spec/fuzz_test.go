package spec

// FuzzParse feeds arbitrary bytes to the loader, seeded with the reference
// labs and every bad spec in testdata. It checks that Parse never panics,
// that every diagnostic names the file, and that a lab that loads without
// errors can be expanded (Machines, Budget) and loads again the same.
//
// Run: go test -run='^$' -fuzz=FuzzParse -fuzztime=5m ./internal/spec/
//
// Long runs (-parallel=1 on a shared 2-core machine), both PASS:
//   - 2026-11-23 20:51 UTC: 5m0s, 796961 executions, 53 new interesting inputs;
//   - 2026-11-23 20:59 UTC, on the final loader and validator: 5m0s,
//     940702 executions, 156 new interesting inputs (cached corpus 330).
// (The fuzzer may print "0/sec" for a while: workers report their counts
// in batches, golang/go#51484; it is not a hang.)

import (
	"os"
	"path/filepath"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add(Reference(ProviderLocal))
	f.Add(Reference(ProviderProxmox))
	f.Add([]byte(minimal))
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("a: &x [*x, *x]\nb: *x\n"))
	f.Add([]byte("vpn: &v {peers: [*v]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lab, warns, err := Parse("lab.yaml", data)
		for _, d := range append(Diagnostics(err), warns...) {
			if d.File != "lab.yaml" {
				t.Fatalf("diagnostic without the file name: %v", d)
			}
			if d.Msg == "" {
				t.Fatalf("diagnostic without a message: %#v", d)
			}
		}
		if err != nil {
			if len(Diagnostics(err)) == 0 {
				t.Fatalf("error that is not a diagnostic: %v", err)
			}
			return
		}
		if lab == nil {
			t.Fatal("no error and no lab")
		}
		ms := lab.Machines()
		b := lab.Budget()
		if len(b.Guests) != len(ms) {
			t.Fatalf("budget has %d guests, Machines %d", len(b.Guests), len(ms))
		}
		_ = b.Table()
		// A valid lab is deterministic: parsing again gives the same plan.
		lab2, _, err2 := Parse("lab.yaml", data)
		if err2 != nil {
			t.Fatalf("second Parse failed: %v", err2)
		}
		ms2 := lab2.Machines()
		for i := range ms {
			if ms[i].Name != ms2[i].Name || ms[i].VMID != ms2[i].VMID || len(ms[i].NICs) != len(ms2[i].NICs) {
				t.Fatalf("machine %d differs between parses", i)
			}
			for j := range ms[i].NICs {
				if ms[i].NICs[j].Address != ms2[i].NICs[j].Address {
					t.Fatalf("%s NIC %d address differs between parses", ms[i].Name, j)
				}
			}
		}
	})
}

package spec

import (
	"bytes"
	"strings"
	"testing"
)

func TestMachines(t *testing.T) {
	lab := mustParse(t, minimal)
	want := []struct {
		name string
		role MachineRole
		kind GuestKind
		vmid int
		path string
		idx  int
		nets []string
	}{
		{"lab-vpn", MachineVPN, KindLXC, 100, "vpn", 0, []string{"wan", "admin"}},
		{"lab-lb", MachineLB, KindLXC, 101, "loadBalancer", 0, []string{"wan", "apps"}},
		{"lab-manager", MachineManager, KindVM, 110, "manager", 0, []string{"admin"}},
		{"lab-cp-1", MachineControlPlane, KindVM, 200, "cluster.controlPlanes", 0, []string{"admin"}},
		{"lab-cp-2", MachineControlPlane, KindVM, 201, "cluster.controlPlanes", 1, []string{"admin"}},
		{"lab-cp-3", MachineControlPlane, KindVM, 202, "cluster.controlPlanes", 2, []string{"admin"}},
		{"lab-worker-1", MachineWorker, KindVM, 210, "cluster.workers", 0, []string{"admin", "apps"}},
		{"lab-worker-2", MachineWorker, KindVM, 211, "cluster.workers", 1, []string{"admin", "apps"}},
	}
	ms := lab.Machines()
	if len(ms) != len(want) {
		t.Fatalf("Machines() = %d guests, want %d", len(ms), len(want))
	}
	macs := map[string]string{}
	for i, w := range want {
		m := ms[i]
		if m.Name != w.name || m.Role != w.role || m.Kind != w.kind || m.VMID != w.vmid || m.Path != w.path || m.Index != w.idx {
			t.Errorf("Machines()[%d] = %s %s %s %d %s %d, want %s %s %s %d %s %d", i,
				m.Name, m.Role, m.Kind, m.VMID, m.Path, m.Index, w.name, w.role, w.kind, w.vmid, w.path, w.idx)
		}
		if len(m.NICs) != len(w.nets) {
			t.Errorf("%s has %d NICs, want %v", m.Name, len(m.NICs), w.nets)
			continue
		}
		for j, n := range m.NICs {
			if n.Network != w.nets[j] {
				t.Errorf("%s NIC %d on %s, want %s", m.Name, j, n.Network, w.nets[j])
			}
			net, _ := lab.NetworkByName(n.Network)
			if n.Prefix != net.CIDR || n.Gateway != net.Gateway || n.Bridge != net.Bridge || n.Role != net.Role {
				t.Errorf("%s NIC %d does not carry its network's settings: %+v", m.Name, j, n)
			}
			if !n.Prefix.Contains(n.Address) {
				t.Errorf("%s NIC %d address %s outside %s", m.Name, j, n.Address, n.Prefix)
			}
			if other, dup := macs[n.MAC.String()]; dup {
				t.Errorf("%s NIC %d MAC %s also on %s", m.Name, j, n.MAC, other)
			}
			macs[n.MAC.String()] = m.Name
			if n.MAC[0]&0x02 == 0 || n.MAC[0]&0x01 != 0 {
				t.Errorf("MAC %s is not locally administered unicast", n.MAC)
			}
		}
	}
	// Stable across loads.
	again := mustParse(t, minimal).Machines()
	for i := range ms {
		for j := range ms[i].NICs {
			if !bytes.Equal(ms[i].NICs[j].MAC, again[i].NICs[j].MAC) {
				t.Errorf("%s NIC %d MAC changed between loads", ms[i].Name, j)
			}
		}
	}
	if a, ok := ms[0].Address(RoleWAN); !ok || a.String() != "192.168.1.2" {
		t.Errorf("vpn Address(wan) = %v, %v", a, ok)
	}
	if _, ok := ms[2].Address(RoleWAN); ok {
		t.Errorf("manager has a wan address")
	}
}

func TestBudget(t *testing.T) {
	lab := mustParse(t, minimal)
	b := lab.Budget()
	// vpn+lb 2x(1, 256MiB, 2GiB), manager (1, 1GiB, 16GiB),
	// 3 cp (2, 2GiB, 20GiB), 2 workers (2, 2GiB, 80GiB).
	want := Resources{Cores: 1 + 1 + 1 + 3*2 + 2*2, Memory: 512*MiB + GiB + 3*2*GiB + 2*2*GiB, Disk: 4*GiB + 16*GiB + 60*GiB + 160*GiB}
	if b.Used != want {
		t.Errorf("Budget().Used = %+v, want %+v", b.Used, want)
	}
	if b.Available != (Resources{Cores: 4, Memory: 14 * GiB, Disk: 468 * GiB}) {
		t.Errorf("Budget().Available = %+v", b.Available)
	}
	if len(b.Guests) != 8 || b.Guests[3].Name != "lab-cp-1" || b.Guests[3].Memory != 2*GiB {
		t.Errorf("Budget().Guests = %+v", b.Guests)
	}
	if !b.Fits() {
		t.Errorf("Budget().Fits() = false for %+v", b.Used)
	}
	over := b
	over.Used.Memory = 15 * GiB
	if over.Fits() {
		t.Errorf("Fits() = true with 15GiB used of 14GiB")
	}
}

func TestBudgetTable(t *testing.T) {
	lab := mustParse(t, string(Reference(ProviderLocal)))
	got := lab.Budget().Table()
	want := `GUEST                 KIND         CORES   MEMORY    DISK
lab-vpn               lxc              1   256MiB    2GiB
lab-lb                lxc              1   256MiB    2GiB
lab-manager           vm               1     1GiB   16GiB
lab-cp-1              vm               2     3GiB   20GiB
lab-worker-1          vm               2     4GiB   80GiB
lab-worker-2          vm               2     4GiB   80GiB

total guests                           9  12.5GiB  200GiB
host                                   4    16GiB  500GiB
reserve (hypervisor)                   0     2GiB   32GiB
available to guests                    4    14GiB  468GiB
free                        2.25x shared   1.5GiB  268GiB
`
	if got != want {
		t.Errorf("Budget().Table() =\n%s\nwant:\n%s", got, want)
	}
}

func TestBudgetDoesNotWrap(t *testing.T) {
	src := minimal + "manager: {memory: 16000000TiB}\n"
	src = strings.Replace(src, "workers: {count: 2, memory: 2GiB}", "workers: {count: 2, memory: 2GiB, disk: 16000000TiB}", 1)
	lab, _, err := Parse("lab.yaml", []byte(src))
	if err == nil {
		t.Fatal("absurd sizes accepted")
	}
	b := lab.Budget()
	if b.Fits() || b.Used.Memory < 16000000*TiB || b.Used.Disk < 16000000*TiB {
		t.Errorf("budget wrapped around: %+v", b.Used)
	}
}

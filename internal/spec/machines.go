package spec

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
)

// MachineRole is what a guest does in the lab.
type MachineRole string

// The guest roles.
const (
	MachineVPN          MachineRole = "vpn"
	MachineLB           MachineRole = "lb"
	MachineManager      MachineRole = "manager"
	MachineControlPlane MachineRole = "controlplane"
	MachineWorker       MachineRole = "worker"
)

// GuestKind is how a guest is built on Proxmox.
type GuestKind string

// The guest kinds.
const (
	KindLXC GuestKind = "lxc"
	KindVM  GuestKind = "vm"
)

// Machine is one guest of the lab after defaults and address assignment:
// what render and the providers work from.
type Machine struct {
	// Name is unique in the lab and prefixed with the lab's name:
	// <lab>-vpn, <lab>-lb, <lab>-manager, <lab>-cp-1, <lab>-worker-1.
	Name   string
	Role   MachineRole
	Kind   GuestKind
	VMID   int
	Cores  int
	Memory Size
	Disk   Size
	// NICs in attachment order (net0, net1, ... inside the guest).
	NICs []NIC
	// Path is the YAML path of the spec node that declares this machine,
	// for messages (for example cluster.workers).
	Path string
	// Index is the machine's position in its pool (0 for single guests).
	Index int
}

// NIC is one network interface of a machine.
type NIC struct {
	Network string
	Role    Role
	Bridge  string
	Address netip.Addr
	Prefix  netip.Prefix // the network's CIDR
	Gateway netip.Addr   // the network's gateway
	VLAN    int
	// MAC is a stable, locally administered address derived from the lab,
	// machine and interface index, so that Talos device selectors, Proxmox
	// NICs and local veths agree without storing state.
	MAC net.HardwareAddr
}

// StableMAC derives a locally administered unicast MAC from the lab name,
// machine name and interface index.
func StableMAC(lab, machine string, index int) net.HardwareAddr {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", lab, machine, index))
	mac := net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
	return mac
}

// NIC returns the machine's interface on the network with the given role.
func (m *Machine) NIC(role Role) (NIC, bool) {
	for _, n := range m.NICs {
		if n.Role == role {
			return n, true
		}
	}
	return NIC{}, false
}

// Address returns the machine's address on the network with the given role.
func (m *Machine) Address(role Role) (netip.Addr, bool) {
	n, ok := m.NIC(role)
	return n.Address, ok
}

// NetworkByRole returns the network with the given role.
func (l *Lab) NetworkByRole(r Role) (*Network, bool) {
	for i := range l.Networks {
		if l.Networks[i].Role == r {
			return &l.Networks[i], true
		}
	}
	return nil, false
}

// NetworkByName returns the network with the given name.
func (l *Lab) NetworkByName(name string) (*Network, bool) {
	for i := range l.Networks {
		if l.Networks[i].Name == name {
			return &l.Networks[i], true
		}
	}
	return nil, false
}

// Machines lists every guest of the lab in a fixed order: VPN, load
// balancer, manager, control planes, workers. It expects a lab that went
// through Load (defaults and addresses filled in); a network or address
// that is missing is left out rather than guessed.
func (l *Lab) Machines() []Machine {
	var ms []Machine
	single := func(role MachineRole, kind GuestKind, path string, g Guest, nets []string) {
		name := l.Name + "-" + string(role)
		ms = append(ms, Machine{
			Name: name, Role: role, Kind: kind, VMID: g.VMID,
			Cores: g.Cores, Memory: g.Memory, Disk: g.Disk, Path: path,
			NICs: l.nics(name, nets, func(net string) (netip.Addr, bool) { a, ok := g.Addresses[net]; return a, ok }),
		})
	}
	single(MachineVPN, KindLXC, "vpn", l.VPN.Guest, l.guestNetworks(l.VPN.Guest, RoleWAN, RoleAdmin))
	single(MachineLB, KindLXC, "loadBalancer", l.LoadBalancer.Guest, l.guestNetworks(l.LoadBalancer.Guest, RoleWAN, RoleApps))
	single(MachineManager, KindVM, "manager", l.Manager.Guest, l.guestNetworks(l.Manager.Guest, RoleAdmin))
	pool := func(role MachineRole, short, path string, p NodePool) {
		for i := 0; i < p.Count; i++ {
			vmid := 0
			if p.VMIDStart > 0 {
				vmid = p.VMIDStart + i
			}
			name := fmt.Sprintf("%s-%s-%d", l.Name, short, i+1)
			ms = append(ms, Machine{
				Name: name, Role: role, Kind: KindVM, VMID: vmid,
				Cores: p.Cores, Memory: p.Memory, Disk: p.Disk, Path: path, Index: i,
				NICs: l.nics(name, p.Networks, func(net string) (netip.Addr, bool) {
					as := p.Addresses[net]
					if i < len(as) {
						return as[i], true
					}
					return netip.Addr{}, false
				}),
			})
		}
	}
	pool(MachineControlPlane, "cp", "cluster.controlPlanes", l.Cluster.ControlPlanes)
	pool(MachineWorker, "worker", "cluster.workers", l.Cluster.Workers)
	return ms
}

// guestNetworks returns the networks a single guest attaches to: the
// networks of its role, plus any other network the spec gave it an address
// on (sorted by the spec's network order).
func (l *Lab) guestNetworks(g Guest, roles ...Role) []string {
	var names []string
	for _, n := range l.Networks {
		want := false
		for _, r := range roles {
			if n.Role == r {
				want = true
			}
		}
		if _, ok := g.Addresses[n.Name]; ok {
			want = true
		}
		if want {
			names = append(names, n.Name)
		}
	}
	return names
}

func (l *Lab) nics(machine string, nets []string, addr func(string) (netip.Addr, bool)) []NIC {
	var out []NIC
	for _, name := range nets {
		n, ok := l.NetworkByName(name)
		if !ok {
			continue
		}
		a, _ := addr(name)
		out = append(out, NIC{Network: n.Name, Role: n.Role, Bridge: n.Bridge, Address: a,
			Prefix: n.CIDR, Gateway: n.Gateway, VLAN: n.VLAN, MAC: StableMAC(l.Name, machine, len(out))})
	}
	return out
}

package local

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/homelab-dev/homelab/internal/spec"
)

// Topology is the lab laid out as namespaces and links: what the provider
// builds and what verify probes. It is computed from the spec alone.
type Topology struct {
	Lab string
	// HostNS holds the bridges, the host's firewall and NAT.
	HostNS string
	// InternetNS is the outside world: the wan network's gateway (the home
	// router) and a router to the vpn-client namespace.
	InternetNS string
	// ClientNS is a VPN user's device on the Internet side.
	ClientNS string
	// HostWAN is the host's own address on the wan bridge (masquerade source).
	HostWAN netip.Prefix
	// InternetAddr is the internet namespace's address on wan (the wan gateway).
	InternetAddr netip.Prefix
	// Uplink is the small network between the internet namespace (first
	// address) and the vpn-client namespace (second address).
	UplinkInternet, UplinkClient netip.Prefix
	// Bridges of the host namespace, one per network, in spec order.
	Bridges []Bridge
	// Guests are the lab's machines, one namespace each.
	Guests []Guest
}

// Bridge is one network's bridge in the host namespace.
type Bridge struct {
	Network string
	Role    spec.Role
	Name    string       // the spec's bridge name (vmbr0 ...)
	Addr    netip.Prefix // the host's address on it (invalid: none)
}

// Guest is one machine's namespace.
type Guest struct {
	Machine spec.Machine
	NS      string
	// Gateway is the default route (invalid: none).
	Gateway netip.Addr
	// Links are the guest's NICs, in the machine's order.
	Links []Link
}

// Link is a veth pair: Host in the host namespace (a bridge port), Inside
// in the guest namespace, named after the network.
type Link struct {
	Network string
	Bridge  string
	Host    string
	Inside  string
	MAC     net.HardwareAddr
	Addr    netip.Prefix
}

// The fixed parts of the topology outside the lab's own networks. The
// uplink is taken from the benchmarking range (RFC 2544), which a lab's
// networks do not use.
var (
	uplinkInternet = netip.MustParsePrefix("198.18.0.1/30")
	uplinkClient   = netip.MustParsePrefix("198.18.0.2/30")
)

// Interface names of the links that are not guest NICs.
const (
	internetWANIf    = "wan"    // the internet namespace's leg on the wan bridge
	internetClientIf = "client" // the internet namespace's leg to the vpn-client
	clientUplinkIf   = "uplink" // the vpn-client namespace's leg
)

// TopologyOf lays the lab out. The lab must have gone through spec.Load.
func TopologyOf(lab *spec.Lab) (*Topology, error) {
	t := &Topology{
		Lab:            lab.Name,
		HostNS:         lab.Name + "-host",
		InternetNS:     lab.Name + "-internet",
		ClientNS:       lab.Name + "-vpn-client",
		UplinkInternet: uplinkInternet,
		UplinkClient:   uplinkClient,
	}
	wan, ok := lab.NetworkByRole(spec.RoleWAN)
	if !ok || !wan.Gateway.IsValid() {
		return nil, fmt.Errorf("laying out the local lab: it needs a wan network with a gateway")
	}
	ms := lab.Machines()
	used := map[netip.Addr]bool{wan.Gateway: true}
	for _, m := range ms {
		for _, n := range m.NICs {
			used[n.Address] = true
		}
	}
	// The host's wan address: the highest free address of the wan subnet.
	hostWAN := lastHost(wan.CIDR)
	for hostWAN.IsValid() && used[hostWAN] && wan.CIDR.Contains(hostWAN) {
		hostWAN = hostWAN.Prev()
	}
	if !hostWAN.IsValid() || !wan.CIDR.Contains(hostWAN) || hostWAN == wan.CIDR.Masked().Addr() {
		return nil, fmt.Errorf("laying out the local lab: no free address on %s for the host", wan.CIDR)
	}
	t.HostWAN = netip.PrefixFrom(hostWAN, wan.CIDR.Bits())
	t.InternetAddr = netip.PrefixFrom(wan.Gateway, wan.CIDR.Bits())

	for _, n := range lab.Networks {
		b := Bridge{Network: n.Name, Role: n.Role, Name: n.Bridge}
		switch n.Role {
		case spec.RoleWAN:
			b.Addr = t.HostWAN
		default:
			if n.Gateway.IsValid() {
				b.Addr = netip.PrefixFrom(n.Gateway, n.CIDR.Bits())
			}
		}
		t.Bridges = append(t.Bridges, b)
	}

	for _, m := range ms {
		g := Guest{Machine: m, NS: m.Name}
		short := shortName(lab.Name, m.Name)
		for i, n := range m.NICs {
			g.Links = append(g.Links, Link{
				Network: n.Network, Bridge: n.Bridge,
				Host:   hostIfName(lab.Name, fmt.Sprintf("%sn%d", short, i)),
				Inside: n.Network, MAC: n.MAC,
				Addr: netip.PrefixFrom(n.Address, n.Prefix.Bits()),
			})
		}
		g.Gateway = defaultGateway(m)
		t.Guests = append(t.Guests, g)
	}
	return t, nil
}

// defaultGateway picks a guest's default route: the wan gateway for the
// guests on wan (VPN and LB answer the Internet there), else the gateway
// of the admin network, else of the first network.
func defaultGateway(m spec.Machine) netip.Addr {
	for _, role := range []spec.Role{spec.RoleWAN, spec.RoleAdmin, spec.RoleApps} {
		if n, ok := m.NIC(role); ok && n.Gateway.IsValid() {
			return n.Gateway
		}
	}
	return netip.Addr{}
}

func lastHost(p netip.Prefix) netip.Addr {
	p = p.Masked()
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= 1<<(32-p.Bits()) - 1
	v-- // below the broadcast address
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// shortName turns a machine name into a few characters for link names:
// vpn, lb, mgr, c1 (cp-1), w2 (worker-2).
func shortName(lab, machine string) string {
	s := strings.TrimPrefix(machine, lab+"-")
	switch {
	case s == "manager":
		return "mgr"
	case strings.HasPrefix(s, "cp-"):
		return "c" + strings.TrimPrefix(s, "cp-")
	case strings.HasPrefix(s, "worker-"):
		return "w" + strings.TrimPrefix(s, "worker-")
	}
	return s
}

// hostIfName names a link end in the host namespace: the lab's name (cut
// if needed) and a suffix, within the kernel's 15 characters. The host
// namespace belongs to one lab, so a cut name cannot collide.
func hostIfName(lab, suffix string) string {
	room := 15 - len(suffix) - 1
	if room < 1 {
		return suffix[:15]
	}
	if len(lab) > room {
		lab = lab[:room]
	}
	return lab + "-" + suffix
}

// internetIfName is the host-namespace end of the internet namespace's link.
func (t *Topology) internetIfName() string { return hostIfName(t.Lab, "inet") }

// Namespaces lists every namespace of the lab.
func (t *Topology) Namespaces() []string {
	out := []string{t.HostNS, t.InternetNS, t.ClientNS}
	for _, g := range t.Guests {
		out = append(out, g.NS)
	}
	return out
}

// Guest returns the guest of the machine with the given role and index.
func (t *Topology) Guest(role spec.MachineRole, index int) (*Guest, bool) {
	for i := range t.Guests {
		g := &t.Guests[i]
		if g.Machine.Role == role && g.Machine.Index == index {
			return g, true
		}
	}
	return nil, false
}

// Owns reports whether a namespace name can belong to the lab: the fixed
// ones and those of any machine the lab could have (so that a shrunk pool
// still finds its old nodes).
func Owns(lab, name string) bool {
	rest, ok := strings.CutPrefix(name, lab+"-")
	return ok && ownedRE.MatchString(rest)
}

var ownedRE = regexp.MustCompile(`^(host|internet|vpn-client|vpn|lb|manager|cp-[0-9]+|worker-[0-9]+)$`)

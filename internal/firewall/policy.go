package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/homelab-dev/homelab/internal/spec"
)

// The places that filter, keys of the map Rulesets returns.
const (
	PlaceHost = "host"
	PlaceLB   = "lb"
	PlaceVPN  = "vpn"
)

// Port is a named TCP port of the admin network.
type Port struct {
	Number uint16
	Name   string
}

// AdminPorts are what a VPN peer may reach on the admin network, and
// nothing else: SSH, the dashboards behind the admin ingress (HTTP and
// HTTPS), the Kubernetes API and the Talos API.
var AdminPorts = []Port{
	{22, "ssh"},
	{80, "dashboards (http)"},
	{443, "dashboards (https)"},
	{6443, "kubernetes api"},
	{50000, "talos api"},
}

// TableName is the name of the lab's table in every ruleset.
func TableName(lab *spec.Lab) string { return "homelab-" + lab.Name }

// Rulesets turns the security policy of DESIGN.md into the rulesets of the
// host ("host": forwarding between the bridges and NAT), the load
// balancer container ("lb") and the VPN container ("vpn"). It expects a lab
// that went through spec.Load (defaults and addresses filled in).
func Rulesets(lab *spec.Lab) (map[string]*Ruleset, error) {
	z, err := zonesOf(lab)
	if err != nil {
		return nil, fmt.Errorf("building the firewall policy: %w", err)
	}
	out := map[string]*Ruleset{
		PlaceHost: hostRuleset(lab, z),
		PlaceVPN:  vpnRuleset(lab, z),
	}
	lb, err := lbRuleset(lab, z)
	if err != nil {
		return nil, fmt.Errorf("building the firewall policy: %w", err)
	}
	out[PlaceLB] = lb
	for place, rs := range out {
		if err := rs.Check(); err != nil {
			return nil, fmt.Errorf("building the %s firewall ruleset: %w", place, err)
		}
	}
	return out, nil
}

// zones is what the policy needs to know about the lab.
type zones struct {
	wan, admin, apps *spec.Network
	machines         []spec.Machine
	vpn, lb          spec.Machine
}

func zonesOf(lab *spec.Lab) (*zones, error) {
	var z zones
	var errs []error
	for _, r := range []struct {
		role spec.Role
		dst  **spec.Network
	}{{spec.RoleWAN, &z.wan}, {spec.RoleAdmin, &z.admin}, {spec.RoleApps, &z.apps}} {
		n, ok := lab.NetworkByRole(r.role)
		if !ok {
			errs = append(errs, fmt.Errorf("no network with role %s", r.role))
			continue
		}
		if !n.CIDR.IsValid() || !n.CIDR.Addr().Is4() || n.Bridge == "" {
			errs = append(errs, fmt.Errorf("network %s: needs an IPv4 CIDR and a bridge", n.Name))
		}
		*r.dst = n
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	z.machines = lab.Machines()
	for _, m := range z.machines {
		switch m.Role {
		case spec.MachineVPN:
			z.vpn = m
		case spec.MachineLB:
			z.lb = m
		}
	}
	if _, ok := z.vpn.Address(spec.RoleWAN); !ok || !lab.VPN.Tunnel.IsValid() || lab.VPN.ListenPort == 0 {
		errs = append(errs, errors.New("vpn: needs a wan address, a tunnel subnet and a listen port"))
	}
	if _, ok := z.vpn.Address(spec.RoleAdmin); !ok {
		errs = append(errs, errors.New("vpn: needs an admin address"))
	}
	if _, ok := z.lb.Address(spec.RoleWAN); !ok {
		errs = append(errs, errors.New("loadBalancer: needs a wan address"))
	}
	if _, ok := z.lb.Address(spec.RoleApps); !ok {
		errs = append(errs, errors.New("loadBalancer: needs an apps address"))
	}
	return &z, errors.Join(errs...)
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }

func filterChain(hook Hook, policy Verdict) *Chain {
	return &Chain{Name: string(hook), Type: TypeFilter, Hook: hook, Priority: PriorityFilter, Policy: policy}
}

var (
	ruleEstablished = Rule{CTState: []CTState{CTEstablished, CTRelated}, Verdict: Accept, Comment: "replies"}
	ruleInvalid     = Rule{CTState: []CTState{CTInvalid}, Verdict: Drop}
	ruleLoopback    = Rule{IIfName: "lo", Verdict: Accept}
)

// hostRuleset routes between the bridges: admin and apps may reach the
// Internet through the wan bridge (masqueraded), except the VPN container's
// admin address (peers are masqueraded to it, and peers get no Internet
// egress) and the load balancer (no egress). Nothing is routed into admin
// or apps, and admin and apps are not routed to each other.
//
// The host's own input is left alone: on Proxmox the host is managed over
// its own address and a default-deny input chain here could lock the
// administrator out.
func hostRuleset(lab *spec.Lab, z *zones) *Ruleset {
	vpnAdmin, _ := z.vpn.Address(spec.RoleAdmin)
	lbApps, _ := z.lb.Address(spec.RoleApps)
	fwd := filterChain(HookForward, Drop)
	fwd.Rules = []Rule{
		ruleEstablished,
		ruleInvalid,
		{IIfName: z.admin.Bridge, OIfName: z.wan.Bridge, SAddr: Addr{Prefix: host(vpnAdmin)}, Counter: true, Verdict: Drop,
			Comment: "vpn peers get no internet egress"},
		{IIfName: z.apps.Bridge, OIfName: z.wan.Bridge, SAddr: Addr{Prefix: host(lbApps)}, Counter: true, Verdict: Drop,
			Comment: "the load balancer gets no egress"},
		{IIfName: z.admin.Bridge, OIfName: z.wan.Bridge, SAddr: Addr{Prefix: z.admin.CIDR}, Verdict: Accept,
			Comment: "admin egress to the internet"},
		{IIfName: z.apps.Bridge, OIfName: z.wan.Bridge, SAddr: Addr{Prefix: z.apps.CIDR}, Verdict: Accept,
			Comment: "apps egress to the internet"},
	}
	nat := &Chain{Name: "postrouting", Type: TypeNAT, Hook: HookPostrouting, Priority: PrioritySrcNAT, Policy: Accept,
		Rules: []Rule{{OIfName: z.wan.Bridge, SAddr: Addr{Set: "egress"}, Verdict: Masquerade, Comment: "nat to the wan address"}}}
	return &Ruleset{Tables: []*Table{{
		Family: FamilyInet, Name: TableName(lab),
		Sets:   []*Set{{Name: "egress", Elements: []netip.Prefix{z.admin.CIDR, z.apps.CIDR}}},
		Chains: []*Chain{fwd, nat},
	}}}
}

// vpnRuleset lets WireGuard in on wan and forwards the tunnel to the admin
// ports of the admin network only, masqueraded to the container's admin
// address; nothing reaches apps or the Internet through the tunnel.
func vpnRuleset(lab *spec.Lab, z *zones) *Ruleset {
	wanIf, adminIf := z.wan.Name, z.admin.Name
	wanAddr, _ := z.vpn.Address(spec.RoleWAN)
	tunnel := lab.VPN.Tunnel.Masked()
	ports := make([]uint16, len(AdminPorts))
	for i, p := range AdminPorts {
		ports[i] = p.Number
	}
	in := filterChain(HookInput, Drop)
	in.Rules = []Rule{
		ruleLoopback,
		ruleEstablished,
		ruleInvalid,
		{IIfName: wanIf, DAddr: Addr{Prefix: host(wanAddr)}, Proto: UDP, DPorts: []uint16{uint16(lab.VPN.ListenPort)}, Verdict: Accept,
			Comment: "wireguard"},
		{IIfName: TunnelInterface, SAddr: Addr{Prefix: tunnel}, Proto: ICMP, Verdict: Accept, Comment: "peers may ping the server"},
	}
	fwd := filterChain(HookForward, Drop)
	fwd.Rules = []Rule{
		ruleEstablished,
		ruleInvalid,
		{IIfName: TunnelInterface, OIfName: adminIf, SAddr: Addr{Prefix: tunnel}, DAddr: Addr{Prefix: z.admin.CIDR},
			Proto: TCP, DPorts: ports, Counter: true, Verdict: Accept, Comment: "peers to the admin ports"},
		{IIfName: TunnelInterface, OIfName: adminIf, SAddr: Addr{Prefix: tunnel}, DAddr: Addr{Prefix: z.admin.CIDR},
			Proto: ICMP, Verdict: Accept, Comment: "peers may ping the admin network"},
	}
	// The DNS servers pushed to peers, when they are on the admin network.
	for _, d := range lab.VPN.DNS {
		if !d.Is4() || !z.admin.CIDR.Contains(d) {
			continue
		}
		for _, proto := range []L4Proto{UDP, TCP} {
			fwd.Rules = append(fwd.Rules, Rule{IIfName: TunnelInterface, OIfName: adminIf, SAddr: Addr{Prefix: tunnel},
				DAddr: Addr{Prefix: host(d)}, Proto: proto, DPorts: []uint16{53}, Verdict: Accept, Comment: "peers' dns server"})
		}
	}
	fwd.Rules = append(fwd.Rules, Rule{IIfName: TunnelInterface, Counter: true, LogPrefix: "homelab vpn deny: ", Verdict: Drop,
		Comment: "nothing else: no apps, no internet"})
	nat := &Chain{Name: "postrouting", Type: TypeNAT, Hook: HookPostrouting, Priority: PrioritySrcNAT, Policy: Accept,
		Rules: []Rule{{OIfName: adminIf, SAddr: Addr{Prefix: tunnel}, Verdict: Masquerade, Comment: "peers appear as the vpn's admin address"}}}
	return &Ruleset{Tables: []*Table{{
		Family: FamilyInet, Name: TableName(lab),
		Chains: []*Chain{in, fwd, filterChain(HookOutput, Accept), nat},
	}}}
}

// setName makes an nft identifier out of a prefix and a spec name.
func setName(prefix, name string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// backendRole maps a frontend's backend role to the machine role.
func backendRole(role string) (spec.MachineRole, error) {
	switch role {
	case "worker", "workers":
		return spec.MachineWorker, nil
	case "controlplane", "controlplanes", "control-plane":
		return spec.MachineControlPlane, nil
	}
	return "", fmt.Errorf("unknown backend role %q (want worker or controlplane)", role)
}

// Backends lists the addresses of the machines a frontend sends traffic
// to, in the spec's machine order, and the network (interface) they are on.
func Backends(lab *spec.Lab, fe spec.Frontend) (network string, addrs []netip.Addr, err error) {
	role, err := backendRole(fe.Backends.Role)
	if err != nil {
		return "", nil, fmt.Errorf("frontend %s: %w", fe.Name, err)
	}
	network = fe.Backends.Network
	if network == "" {
		want := spec.RoleApps
		if role == spec.MachineControlPlane {
			want = spec.RoleAdmin
		}
		if n, ok := lab.NetworkByRole(want); ok {
			network = n.Name
		}
	}
	for _, m := range lab.Machines() {
		if m.Role != role {
			continue
		}
		for _, n := range m.NICs {
			if n.Network == network && n.Address.IsValid() {
				addrs = append(addrs, n.Address)
			}
		}
	}
	if len(addrs) == 0 {
		return "", nil, fmt.Errorf("frontend %s: no %s has an address on network %q", fe.Name, fe.Backends.Role, network)
	}
	return network, addrs, nil
}

func frontendProto(fe spec.Frontend) L4Proto {
	if fe.Protocol == "udp" {
		return UDP
	}
	return TCP
}

// lbRuleset opens the frontends on the LB's wan address (to the allowed
// sources), the admin port on its apps address to the apps network only,
// and lets the LB talk only to its backends' ports.
func lbRuleset(lab *spec.Lab, z *zones) (*Ruleset, error) {
	wanIf, appsIf := z.wan.Name, z.apps.Name
	wanAddr, _ := z.lb.Address(spec.RoleWAN)
	appsAddr, _ := z.lb.Address(spec.RoleApps)
	t := &Table{Family: FamilyInet, Name: TableName(lab)}
	in := filterChain(HookInput, Drop)
	in.Rules = []Rule{ruleLoopback, ruleEstablished, ruleInvalid}
	out := filterChain(HookOutput, Drop)
	out.Rules = []Rule{{OIfName: "lo", Verdict: Accept}, ruleEstablished}
	for _, fe := range lab.LoadBalancer.Frontends {
		proto := frontendProto(fe)
		port := []uint16{uint16(fe.Port)}
		if len(fe.Deny) > 0 {
			name := setName("deny_", fe.Name)
			t.Sets = append(t.Sets, &Set{Name: name, Elements: masked(fe.Deny)})
			in.Rules = append(in.Rules, Rule{IIfName: wanIf, SAddr: Addr{Set: name}, Proto: proto, DPorts: port,
				Counter: true, Verdict: Drop, Comment: "frontend " + fe.Name + ": denied sources"})
		}
		r := Rule{IIfName: wanIf, DAddr: Addr{Prefix: host(wanAddr)}, Proto: proto, DPorts: port, Verdict: Accept,
			Comment: "frontend " + fe.Name}
		if len(fe.Allow) > 0 {
			name := setName("allow_", fe.Name)
			t.Sets = append(t.Sets, &Set{Name: name, Elements: masked(fe.Allow)})
			r.SAddr = Addr{Set: name}
		}
		in.Rules = append(in.Rules, r)

		network, addrs, err := Backends(lab, fe)
		if err != nil {
			return nil, err
		}
		name := setName("backends_", fe.Name)
		elems := make([]netip.Prefix, len(addrs))
		for i, a := range addrs {
			elems[i] = host(a)
		}
		t.Sets = append(t.Sets, &Set{Name: name, Elements: elems})
		out.Rules = append(out.Rules, Rule{OIfName: network, DAddr: Addr{Set: name}, Proto: proto,
			DPorts: []uint16{uint16(fe.Backends.Port)}, Verdict: Accept, Comment: "frontend " + fe.Name + " backends and health checks"})
	}
	if lab.LoadBalancer.AdminPort != 0 {
		in.Rules = append(in.Rules, Rule{IIfName: appsIf, SAddr: Addr{Prefix: z.apps.CIDR}, DAddr: Addr{Prefix: host(appsAddr)},
			Proto: TCP, DPorts: []uint16{uint16(lab.LoadBalancer.AdminPort)}, Verdict: Accept, Comment: "admin listener (metrics, status)"})
	}
	in.Rules = append(in.Rules, Rule{IIfName: appsIf, SAddr: Addr{Prefix: z.apps.CIDR}, Proto: ICMP, Verdict: Accept,
		Comment: "ping from the apps network"})
	t.Chains = []*Chain{in, filterChain(HookForward, Drop), out}
	return &Ruleset{Tables: []*Table{t}}, nil
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	// An interval set refuses overlapping elements: keep the outermost.
	var kept []netip.Prefix
	for _, p := range out {
		if n := len(kept); n > 0 && kept[n-1].Contains(p.Addr()) && kept[n-1].Bits() <= p.Bits() {
			continue
		}
		kept = append(kept, p)
	}
	return kept
}

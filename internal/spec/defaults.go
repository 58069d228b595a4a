package spec

import (
	"fmt"
	"net/netip"
)

// Defaults. Each one is documented in the reference lab.yaml (Reference) as
// well; keep the two in step.
const (
	DefaultListenPort     = 51820 // WireGuard
	DefaultLBAdminPort    = 8404  // LB /metrics and status page, apps address only
	DefaultMaxConnections = 20000
	DefaultPerSourceLimit = 256
	DefaultPerSourceRate  = 100
	DefaultInstallDisk    = "/dev/sda"
	DefaultManagerUser    = "admin"
	DefaultManagerImage   = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
	DefaultFluxVersion    = "v2.9.5"
	DefaultK9sVersion     = "v0.50.16"
	DefaultExtension      = "siderolabs/qemu-guest-agent"
	DefaultBranch         = "main"
	DefaultEngine         = "flux"

	// MaxPoolSize bounds a node pool: one host does not hold more.
	MaxPoolSize = 50
)

// DefaultTunnel is the VPN tunnel subnet; the server takes .1, peers .2 on.
var DefaultTunnel = netip.MustParsePrefix("10.99.0.0/24")

// Default VMIDs, by role. Control planes and workers count up from their start.
const (
	VMIDVPN          = 100
	VMIDLB           = 101
	VMIDManager      = 110
	VMIDControlPlane = 200
	VMIDWorker       = 210
)

// Host offsets used by the address assignment: on each network a guest
// without an address gets network address + offset (pools: + index), or the
// next free address after it.
const (
	offsetVPN          = 2
	offsetLB           = 3
	offsetManager      = 5
	offsetControlPlane = 10
	offsetWorker       = 20
)

// defaultNetworks are used when the spec has no networks key at all.
func defaultNetworks() []Network {
	return []Network{
		{Name: "wan", Role: RoleWAN, CIDR: netip.MustParsePrefix("192.168.1.0/24")},
		{Name: "admin", Role: RoleAdmin, CIDR: netip.MustParsePrefix("10.10.1.0/24")},
		{Name: "apps", Role: RoleApps, CIDR: netip.MustParsePrefix("10.10.2.0/24")},
	}
}

var defaultBridges = map[Role]string{RoleWAN: "vmbr0", RoleAdmin: "vmbr1", RoleApps: "vmbr2"}

// guest sizes used when a guest gives none.
var (
	sizeContainer    = Guest{Cores: 1, Memory: 256 * MiB, Disk: 2 * GiB}
	sizeManager      = Guest{Cores: 1, Memory: 1 * GiB, Disk: 16 * GiB}
	sizeControlPlane = Guest{Cores: 2, Memory: 3 * GiB, Disk: 20 * GiB}
	sizeWorker       = Guest{Cores: 2, Memory: 4 * GiB, Disk: 80 * GiB}
)

func sizeGuest(g *Guest, def Guest) {
	if g.Cores == 0 {
		g.Cores = def.Cores
	}
	if g.Memory == 0 {
		g.Memory = def.Memory
	}
	if g.Disk == 0 {
		g.Disk = def.Disk
	}
}

func sizePool(p *NodePool, def Guest) {
	if p.Cores == 0 {
		p.Cores = def.Cores
	}
	if p.Memory == 0 {
		p.Memory = def.Memory
	}
	if p.Disk == 0 {
		p.Disk = def.Disk
	}
}

// vPrefix writes a version with its leading v (1.13.9 -> v1.13.9).
func vPrefix(v string) string {
	if v != "" && v[0] >= '0' && v[0] <= '9' {
		return "v" + v
	}
	return v
}

// networksSane reports whether the networks are well formed enough to
// assign and check addresses: one network per role, unique names, valid
// IPv4 subnets that do not overlap.
func (l *Lab) networksSane() bool {
	roles := map[Role]int{}
	names := map[string]bool{}
	for i, n := range l.Networks {
		roles[n.Role]++
		if n.Name == "" || names[n.Name] || !n.CIDR.IsValid() || !n.CIDR.Addr().Is4() {
			return false
		}
		names[n.Name] = true
		for _, o := range l.Networks[:i] {
			if o.CIDR.Overlaps(n.CIDR) {
				return false
			}
		}
	}
	return len(l.Networks) == 3 && roles[RoleWAN] == 1 && roles[RoleAdmin] == 1 && roles[RoleApps] == 1
}

// setDefaults fills every value the spec left out, then assigns addresses
// and VMIDs. It reports only what makes a default impossible (a pool too
// big, a subnet with no free address); validate checks the rest.
func (l *Lab) setDefaults(r *report) {
	h := &l.Host
	if h.Provider == "" {
		h.Provider = ProviderLocal
	}
	if h.Reserve.Memory == 0 {
		h.Reserve.Memory = 2 * GiB
	}
	if h.Reserve.Disk == 0 {
		h.Reserve.Disk = 32 * GiB
	}

	if l.Networks == nil {
		l.Networks = defaultNetworks()
	}
	for i := range l.Networks {
		n := &l.Networks[i]
		if n.Name == "" {
			n.Name = string(n.Role)
		}
		if n.Bridge == "" {
			n.Bridge = defaultBridges[n.Role]
		}
		if !n.Gateway.IsValid() && n.CIDR.IsValid() && n.CIDR.Addr().Is4() && n.CIDR.Bits() < 31 {
			n.Gateway = n.CIDR.Masked().Addr().Next()
		}
	}

	v := &l.VPN
	sizeGuest(&v.Guest, sizeContainer)
	if v.VMID == 0 {
		v.VMID = VMIDVPN
	}
	if v.ListenPort == 0 {
		v.ListenPort = DefaultListenPort
	}
	if !v.Tunnel.IsValid() {
		v.Tunnel = DefaultTunnel
	}

	lb := &l.LoadBalancer
	sizeGuest(&lb.Guest, sizeContainer)
	if lb.VMID == 0 {
		lb.VMID = VMIDLB
	}
	if lb.AdminPort == 0 {
		lb.AdminPort = DefaultLBAdminPort
	}
	if lb.Frontends == nil {
		lb.Frontends = []Frontend{
			{Name: "http", Port: 80, Backends: BackendRef{Role: string(MachineWorker), Port: 30080}, ProxyProtocol: "v2"},
			{Name: "https", Port: 443, Backends: BackendRef{Role: string(MachineWorker), Port: 30443}, ProxyProtocol: "v2"},
		}
	}
	for i := range lb.Frontends {
		setFrontendDefaults(l, &lb.Frontends[i])
	}
	if lb.MaxConnections == 0 {
		lb.MaxConnections = DefaultMaxConnections
	}
	if lb.PerSourceLimit == 0 {
		lb.PerSourceLimit = DefaultPerSourceLimit
	}
	if lb.PerSourceRate == 0 {
		lb.PerSourceRate = DefaultPerSourceRate
	}

	c := &l.Cluster
	c.TalosVersion = vPrefix(c.TalosVersion)
	c.KubernetesVersion = vPrefix(c.KubernetesVersion)
	m := &l.Manager
	sizeGuest(&m.Guest, sizeManager)
	if m.VMID == 0 {
		m.VMID = VMIDManager
	}
	if m.User == "" {
		m.User = DefaultManagerUser
	}
	if m.Image == "" {
		m.Image = DefaultManagerImage
	}
	if m.Tools.Talosctl == "" && reVersion.MatchString(c.TalosVersion) {
		m.Tools.Talosctl = c.TalosVersion
	}
	if m.Tools.Kubectl == "" && reVersion.MatchString(c.KubernetesVersion) {
		m.Tools.Kubectl = c.KubernetesVersion
	}
	if m.Tools.Flux == "" {
		m.Tools.Flux = DefaultFluxVersion
	}
	if m.Tools.K9s == "" {
		m.Tools.K9s = DefaultK9sVersion
	}

	nameOK := len(l.Name) <= 12 && reName.MatchString(l.Name)
	if c.Name == "" && nameOK {
		c.Name = l.Name
	}
	if c.InstallDisk == "" {
		c.InstallDisk = DefaultInstallDisk
	}
	if c.Extensions == nil {
		c.Extensions = []string{DefaultExtension}
	}
	pools := []struct {
		p     *NodePool
		path  string
		size  Guest
		vmid  int
		roles []Role
	}{
		{&c.ControlPlanes, "cluster.controlPlanes", sizeControlPlane, VMIDControlPlane, []Role{RoleAdmin}},
		{&c.Workers, "cluster.workers", sizeWorker, VMIDWorker, []Role{RoleAdmin, RoleApps}},
	}
	for _, pl := range pools {
		if pl.p.Count < 0 || pl.p.Count > MaxPoolSize {
			r.errorf(child(pl.path, "count"), fmt.Sprintf("use 0 to %d nodes; one host holds no more", MaxPoolSize),
				"%d nodes is out of range", pl.p.Count)
			r.failed[child(pl.path, "count")] = true
			pl.p.Count = 0
		}
		sizePool(pl.p, pl.size)
		if pl.p.VMIDStart == 0 {
			pl.p.VMIDStart = pl.vmid
		}
		if pl.p.Networks == nil {
			for _, role := range pl.roles {
				if n, ok := l.NetworkByRole(role); ok {
					pl.p.Networks = append(pl.p.Networks, n.Name)
				}
			}
		}
	}

	g := &l.GitOps
	if g.Engine == "" {
		g.Engine = DefaultEngine
	}
	if g.Branch == "" {
		g.Branch = DefaultBranch
	}
	for i := range g.Apps {
		a := &g.Apps[i]
		if a.Host == "" && a.Name != "" && nameOK && reName.MatchString(a.Name) {
			a.Host = a.Name + "." + l.Name + ".home.arpa"
		}
		if a.Storage == 0 {
			a.Storage = 10 * GiB
		}
	}

	if l.networksSane() {
		l.assignAddresses(r)
	} else {
		r.netsBroken = true
	}

	if v.Endpoint == "" {
		if wan, ok := l.NetworkByRole(RoleWAN); ok {
			if a, ok := v.Addresses[wan.Name]; ok && a.IsValid() {
				v.Endpoint = netip.AddrPortFrom(a, uint16(v.ListenPort)).String()
			}
		}
	}
	l.assignPeers(r)

	if c.Endpoint == "" {
		if admin, ok := l.NetworkByRole(RoleAdmin); ok {
			if as := c.ControlPlanes.Addresses[admin.Name]; len(as) > 0 && as[0].IsValid() {
				c.Endpoint = "https://" + netip.AddrPortFrom(as[0], 6443).String()
			}
		}
	}
}

func setFrontendDefaults(l *Lab, f *Frontend) {
	if f.Protocol == "" {
		f.Protocol = "tcp"
	}
	if f.Balance == "" {
		f.Balance = "roundrobin"
	}
	if f.Backends.Network == "" {
		role := RoleApps
		if f.Backends.Role == string(MachineControlPlane) {
			role = RoleAdmin
		}
		if n, ok := l.NetworkByRole(role); ok {
			f.Backends.Network = n.Name
		}
	}
	if f.Protocol == "udp" {
		return // no health check or PROXY protocol for UDP
	}
	if f.HealthCheck == nil {
		f.HealthCheck = &HealthCheck{}
	}
	hc := f.HealthCheck
	if hc.Type == "" {
		hc.Type = "tcp"
	}
	if hc.Type != "tcp" {
		if hc.Path == "" {
			hc.Path = "/healthz"
		}
		if hc.ExpectStatus == 0 {
			hc.ExpectStatus = 200
		}
	}
	if hc.Interval == 0 {
		hc.Interval = Duration(5e9)
	}
	if hc.Timeout == 0 {
		hc.Timeout = Duration(2e9)
	}
	if hc.Rise == 0 {
		hc.Rise = 2
	}
	if hc.Fall == 0 {
		hc.Fall = 3
	}
}

// subnet is the address pool of one IPv4 network during assignment.
type subnet struct {
	prefix netip.Prefix
	taken  map[netip.Addr]bool
}

func newSubnet(n *Network) (*subnet, bool) {
	p := n.CIDR
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 {
		return nil, false
	}
	p = p.Masked()
	s := &subnet{prefix: p, taken: map[netip.Addr]bool{p.Addr(): true, broadcast(p): true}}
	if n.Gateway.IsValid() {
		s.taken[n.Gateway] = true
	}
	return s, true
}

// broadcast returns the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// offset returns the prefix's network address plus n, and whether it is a
// usable host address of the prefix.
func offset(p netip.Prefix, n int) (netip.Addr, bool) {
	a := p.Masked().Addr().As4()
	size := uint64(1) << (32 - p.Bits())
	if n <= 0 || uint64(n) >= size-1 {
		return netip.Addr{}, false
	}
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// next takes the first free address at or after network address + start.
func (s *subnet) next(start int) (netip.Addr, bool) {
	for off := start; ; off++ {
		a, ok := offset(s.prefix, off)
		if !ok {
			return netip.Addr{}, false
		}
		if !s.taken[a] {
			s.taken[a] = true
			return a, true
		}
	}
}

// assignAddresses gives every guest an address on each network it attaches
// to, unless the spec gave one. See the offsets above.
func (l *Lab) assignAddresses(r *report) {
	subnets := map[string]*subnet{}
	for i := range l.Networks {
		if s, ok := newSubnet(&l.Networks[i]); ok {
			subnets[l.Networks[i].Name] = s
		}
	}
	take := func(net string, a netip.Addr) {
		if s := subnets[net]; s != nil && a.IsValid() {
			s.taken[a] = true
		}
	}
	c := &l.Cluster
	for _, g := range []*Guest{&l.VPN.Guest, &l.LoadBalancer.Guest, &l.Manager.Guest} {
		for net, a := range g.Addresses {
			take(net, a)
		}
	}
	for _, p := range []*NodePool{&c.ControlPlanes, &c.Workers} {
		for net, as := range p.Addresses {
			for _, a := range as {
				take(net, a)
			}
		}
	}

	single := func(g *Guest, path, machine string, start int, roles ...Role) {
		for _, net := range l.guestNetworks(*g, roles...) {
			if a, ok := g.Addresses[net]; ok && a.IsValid() {
				continue
			}
			s := subnets[net]
			if s == nil {
				continue
			}
			a, ok := s.next(start)
			if !ok {
				r.errorf(path, "use a larger CIDR or give the address yourself under addresses",
					"no free address left on network %s (%s) for %s", net, s.prefix, machine)
				continue
			}
			if g.Addresses == nil {
				g.Addresses = map[string]netip.Addr{}
			}
			g.Addresses[net] = a
		}
	}
	single(&l.VPN.Guest, "vpn", l.Name+"-vpn", offsetVPN, RoleWAN, RoleAdmin)
	single(&l.LoadBalancer.Guest, "loadBalancer", l.Name+"-lb", offsetLB, RoleWAN, RoleApps)
	single(&l.Manager.Guest, "manager", l.Name+"-manager", offsetManager, RoleAdmin)

	pool := func(p *NodePool, path, short string, start int) {
		for _, net := range p.Networks {
			s := subnets[net]
			if s == nil {
				continue
			}
			as := p.Addresses[net]
			for i := range p.Count {
				if i < len(as) && as[i].IsValid() {
					continue
				}
				a, ok := s.next(start + i)
				if !ok {
					r.errorf(path, "use a larger CIDR or give the addresses yourself under addresses",
						"no free address left on network %s (%s) for %s-%s-%d", net, s.prefix, l.Name, short, i+1)
					break
				}
				if i < len(as) {
					as[i] = a
				} else {
					as = append(as, a)
				}
			}
			if len(as) > 0 {
				if p.Addresses == nil {
					p.Addresses = map[string][]netip.Addr{}
				}
				p.Addresses[net] = as
			}
		}
	}
	pool(&c.ControlPlanes, "cluster.controlPlanes", "cp", offsetControlPlane)
	pool(&c.Workers, "cluster.workers", "worker", offsetWorker)
}

// assignPeers gives each VPN peer without an address the next free tunnel
// address from .2 (the server is .1).
func (l *Lab) assignPeers(r *report) {
	v := &l.VPN
	if !v.Tunnel.IsValid() || !v.Tunnel.Addr().Is4() || v.Tunnel.Bits() > 30 {
		return
	}
	s := &subnet{prefix: v.Tunnel.Masked(), taken: map[netip.Addr]bool{}}
	if server, ok := offset(s.prefix, 1); ok {
		s.taken[server] = true
	}
	for _, p := range v.Peers {
		if p.Address.IsValid() {
			s.taken[p.Address] = true
		}
	}
	for i := range v.Peers {
		p := &v.Peers[i]
		if p.Address.IsValid() {
			continue
		}
		a, ok := s.next(2)
		if !ok {
			r.errorf(index("vpn.peers", i), "use a larger tunnel subnet", "no free tunnel address left in %s for peer %s", s.prefix, p.Name)
			continue
		}
		p.Address = a
	}
}

// VPNServerAddress is the VPN server's address in the tunnel (its first host).
func (l *Lab) VPNServerAddress() netip.Addr {
	a, _ := offset(l.VPN.Tunnel.Masked(), 1)
	return a
}

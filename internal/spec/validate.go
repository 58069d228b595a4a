package spec

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/compatibility"
)

// Talos minimums per node (Talos's documented system requirements).
var (
	minControlPlane = Guest{Cores: 2, Memory: 2 * GiB, Disk: 10 * GiB}
	minWorker       = Guest{Cores: 1, Memory: 1 * GiB, Disk: 10 * GiB}
)

// CoreOvercommit is how many vCPUs per host core the budget accepts before
// it warns: vCPUs are time-shared, and a lab idles most of the time.
const CoreOvercommit = 3

// KnownApps have GitOps templates.
var KnownApps = []string{"nextcloud", "openproject"}

// sensitivePorts are admin-only services: exposing any of them on the wan
// network breaks the security policy (they are reached through the VPN).
var sensitivePorts = map[int]string{
	22:    "SSH",
	2379:  "etcd",
	2380:  "etcd peer",
	3000:  "Grafana",
	5601:  "Kibana",
	6443:  "the Kubernetes API",
	8006:  "the Proxmox web UI",
	8404:  "the load balancer's status page",
	9090:  "Prometheus",
	9093:  "Alertmanager",
	9100:  "node exporter",
	10250: "the kubelet API",
	10257: "kube-controller-manager",
	10259: "kube-scheduler",
	50000: "the Talos API",
	50001: "Talos trustd",
}

var (
	reName       = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)
	reBridge     = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	reTokenID    = regexp.MustCompile(`^[^@\s]+@[^!\s]+![A-Za-z0-9_.-]+$`)
	reEnv        = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	reFinger     = regexp.MustCompile(`^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$`)
	reVersion    = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)
	reExtension  = regexp.MustCompile(`^[a-z0-9-]+/[a-z0-9-]+$`)
	reUser       = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	reDNSName    = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	sshKeyPrefix = []string{"ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-", "sk-ssh-ed25519@openssh.com ", "sk-ecdsa-sha2-"}
)

// validate checks the lab after defaults: errors and warnings go to r.
func (l *Lab) validate(r *report) {
	switch l.APIVersion {
	case APIVersion:
	case "":
		r.errorf("apiVersion", "add apiVersion: "+APIVersion+" at the top of the file", "apiVersion is missing")
	default:
		r.errorf("apiVersion", "this build reads apiVersion: "+APIVersion, "unsupported apiVersion %q", l.APIVersion)
	}
	switch l.Kind {
	case Kind:
	case "":
		r.errorf("kind", "add kind: "+Kind+" at the top of the file", "kind is missing")
	default:
		r.errorf("kind", "write kind: "+Kind, "unsupported kind %q", l.Kind)
	}
	switch {
	case l.Name == "":
		r.errorf("name", "add for example name: lab; it prefixes every guest, bridge and namespace", "name is missing")
	case len(l.Name) > 12 || !reName.MatchString(l.Name):
		r.errorf("name", "use at most 12 lowercase letters, digits and '-', starting with a letter, for example lab or home-1",
			"invalid name %q", l.Name)
	}
	l.validateHost(r)
	l.validateNetworks(r)
	l.validateGuests(r)
	l.validateVPN(r)
	l.validateLB(r)
	l.validateManager(r)
	l.validateCluster(r)
	l.validateGitOps(r)
	l.validateCapacity(r)
}

func (l *Lab) validateHost(r *report) {
	h := &l.Host
	switch h.Provider {
	case ProviderLocal, ProviderProxmox:
	default:
		r.errorf("host.provider", "use local (network namespaces on this machine) or proxmox", "unknown provider %q", h.Provider)
	}
	if h.Memory == 0 {
		r.errorf("host.memory", "give the host's RAM, for example memory: 16GiB; the budget checks guests against it", "host memory is missing")
	}
	if h.Disk == 0 {
		r.errorf("host.disk", "give the host's disk, for example disk: 500GiB; the budget checks guests against it", "host disk is missing")
	}
	if h.Cores < 1 {
		r.errorf("host.cores", "give the host's CPU cores (threads), for example cores: 4", "host cores must be at least 1, got %d", h.Cores)
	}
	if h.Memory > 0 && h.Reserve.Memory >= h.Memory {
		r.errorf("host.reserve.memory", "the reserve is what the hypervisor keeps; 2GiB is usual",
			"reserve of %s leaves nothing of the host's %s for guests", h.Reserve.Memory, h.Memory)
	}
	if h.Disk > 0 && h.Reserve.Disk >= h.Disk {
		r.errorf("host.reserve.disk", "the reserve is what the hypervisor keeps; 32GiB is usual",
			"reserve of %s leaves nothing of the host's %s for guests", h.Reserve.Disk, h.Disk)
	}
	if h.Reserve.Cores < 0 || (h.Cores > 0 && h.Reserve.Cores >= h.Cores) {
		r.errorf("host.reserve.cores", "reserve 0 or 1 core", "reserve of %d cores is out of range for a %d-core host", h.Reserve.Cores, h.Cores)
	}

	p := h.Proxmox
	if h.Provider == ProviderLocal && p != nil {
		r.warnf("host.proxmox", "remove the proxmox section or set provider: proxmox", "the proxmox section is ignored with provider local")
		return
	}
	if h.Provider != ProviderProxmox {
		return
	}
	if p == nil {
		r.errorf("host.provider", "add a host.proxmox section with endpoint, node, storage, tokenID and tokenEnv (see homelab init --provider proxmox)",
			"provider proxmox needs a proxmox section")
		return
	}
	const pp = "host.proxmox"
	if p.Endpoint == "" {
		r.errorf(child(pp, "endpoint"), "for example endpoint: https://pve.lan:8006", "endpoint is missing")
	} else if u, err := url.Parse(p.Endpoint); err != nil || u.Host == "" {
		r.errorf(child(pp, "endpoint"), "for example endpoint: https://pve.lan:8006", "invalid endpoint URL %q", p.Endpoint)
	} else if u.Scheme != "https" {
		r.errorf(child(pp, "endpoint"), "the Proxmox API is served over TLS: use https://...:8006, and caFile or fingerprint for a self-signed certificate",
			"endpoint %q must use https", p.Endpoint)
	}
	if p.Node == "" {
		r.errorf(child(pp, "node"), "the node name shown in the Proxmox UI, for example node: pve", "node is missing")
	}
	if p.Storage == "" {
		r.errorf(child(pp, "storage"), "the storage for guest disks, for example storage: local-lvm", "storage is missing")
	}
	switch {
	case p.TokenID == "":
		r.errorf(child(pp, "tokenID"), "create an API token in Datacenter > Permissions > API Tokens and write its ID, for example tokenID: root@pam!homelab", "tokenID is missing")
	case !reTokenID.MatchString(p.TokenID):
		r.errorf(child(pp, "tokenID"), "write user@realm!tokenname, for example root@pam!homelab", "invalid tokenID %q", p.TokenID)
	}
	switch {
	case p.TokenFile == "" && p.TokenEnv == "":
		r.errorf(pp, "set tokenEnv: PVE_TOKEN (an environment variable) or tokenFile: a file holding the secret (mode 0600); the secret itself never goes in lab.yaml",
			"the API token secret has no source")
	case p.TokenFile != "" && p.TokenEnv != "":
		r.errorf(child(pp, "tokenEnv"), "keep only one of tokenFile and tokenEnv", "tokenFile and tokenEnv are both set")
	case p.TokenEnv != "" && !reEnv.MatchString(p.TokenEnv):
		r.errorf(child(pp, "tokenEnv"), "name an environment variable, for example PVE_TOKEN", "invalid environment variable name %q", p.TokenEnv)
	}
	if p.Fingerprint != "" && !reFinger.MatchString(p.Fingerprint) {
		r.errorf(child(pp, "fingerprint"), "write the SHA-256 fingerprint as 32 hex pairs separated by colons (Proxmox shows it under System > Certificates)",
			"invalid fingerprint %q", p.Fingerprint)
	}
}

func (l *Lab) validateNetworks(r *report) {
	names := map[string]int{}
	roles := map[Role]int{}
	for i, n := range l.Networks {
		p := index("networks", i)
		switch {
		case n.Name == "":
			r.errorf(child(p, "name"), "give the network a name, for example its role", "network name is missing")
		case !reName.MatchString(n.Name):
			r.errorf(child(p, "name"), "use lowercase letters, digits and '-'", "invalid network name %q", n.Name)
		}
		if j, dup := names[n.Name]; dup && n.Name != "" {
			r.errorf(child(p, "name"), "give each network its own name", "network name %q is already used by networks[%d]", n.Name, j)
		} else {
			names[n.Name] = i
		}
		switch n.Role {
		case RoleWAN, RoleAdmin, RoleApps:
			if j, dup := roles[n.Role]; dup {
				r.errorf(child(p, "role"), "the lab has exactly one wan, one admin and one apps network", "role %s is already taken by networks[%d]", n.Role, j)
			} else {
				roles[n.Role] = i
			}
		case "":
			r.errorf(child(p, "role"), "set role: wan, admin or apps", "network role is missing")
		default:
			r.errorf(child(p, "role"), "use wan (Internet side), admin (behind the VPN) or apps (LB to workers)", "unknown network role %q", n.Role)
		}
		if n.Bridge != "" && !reBridge.MatchString(n.Bridge) {
			r.errorf(child(p, "bridge"), "use at most 15 letters, digits, '-', '_' or '.', for example vmbr1", "invalid bridge name %q", n.Bridge)
		}
		if n.VLAN < 0 || n.VLAN > 4094 {
			r.errorf(child(p, "vlan"), "use a VLAN ID from 1 to 4094, or leave it out for untagged", "VLAN %d is out of range", n.VLAN)
		}
		cp := child(p, "cidr")
		switch {
		case !n.CIDR.IsValid():
			r.errorf(cp, "for example cidr: 10.10.1.0/24", "cidr is missing")
			continue
		case !n.CIDR.Addr().Is4():
			r.errorf(cp, "use an IPv4 subnet, for example 10.10.1.0/24", "%s is not IPv4; networks are IPv4", n.CIDR)
			continue
		case n.CIDR.Masked() != n.CIDR:
			r.errorf(cp, fmt.Sprintf("did you mean %s?", n.CIDR.Masked()), "%s has host bits set", n.CIDR)
		}
		if n.CIDR.Bits() > 29 {
			r.errorf(cp, "use a /29 or larger (a /24 is usual)", "%s is too small for the lab's guests", n.CIDR)
		} else if n.CIDR.Bits() < 8 {
			r.errorf(cp, "use a /8 to /29 subnet (a /24 is usual)", "%s is too large", n.CIDR)
		}
		gp := child(p, "gateway")
		if n.Gateway.IsValid() {
			switch {
			case !n.CIDR.Contains(n.Gateway):
				r.errorf(gp, fmt.Sprintf("use an address inside %s", n.CIDR.Masked()), "gateway %s is outside the network %s", n.Gateway, n.CIDR.Masked())
			case n.Gateway == n.CIDR.Masked().Addr():
				r.errorf(gp, "the first address is the network itself; the gateway is usually the next one", "gateway %s is the network address", n.Gateway)
			case n.Gateway == broadcast(n.CIDR):
				r.errorf(gp, "the last address is the broadcast address", "gateway %s is the broadcast address", n.Gateway)
			}
		}
	}
	for _, role := range []Role{RoleWAN, RoleAdmin, RoleApps} {
		if _, ok := roles[role]; !ok {
			r.errorf("networks", "the lab needs one network per role: wan, admin and apps", "no network has role %s", role)
		}
	}
	// Overlaps, including the VPN tunnel.
	type named struct {
		path string
		p    netip.Prefix
	}
	var ps []named
	for i, n := range l.Networks {
		if n.CIDR.IsValid() && n.CIDR.Addr().Is4() {
			ps = append(ps, named{child(index("networks", i), "cidr"), n.CIDR.Masked()})
		}
	}
	if l.VPN.Tunnel.IsValid() && l.VPN.Tunnel.Addr().Is4() {
		ps = append(ps, named{"vpn.tunnel", l.VPN.Tunnel.Masked()})
	}
	for i := range ps {
		for j := range i {
			if ps[i].p.Overlaps(ps[j].p) {
				r.errorf(ps[i].path, "give every network and the VPN tunnel its own subnet",
					"%s overlaps %s (%s)", ps[i].p, ps[j].p, ps[j].path)
			}
		}
	}
}

// addressCheck checks one explicit or assigned address against its network.
func (l *Lab) addressCheck(r *report, path, net string, a netip.Addr) {
	n, ok := l.NetworkByName(net)
	if !ok {
		var known []string
		for _, n := range l.Networks {
			known = append(known, n.Name)
		}
		r.errorf(path, "networks are: "+strings.Join(known, ", "), "no network is named %q", net)
		return
	}
	if !a.IsValid() || !n.CIDR.IsValid() || !n.CIDR.Addr().Is4() {
		return
	}
	cidr := n.CIDR.Masked()
	switch {
	case !cidr.Contains(a):
		r.errorf(path, fmt.Sprintf("use an address inside %s, or leave it out to have one assigned", cidr), "%s is outside the network %s (%s)", a, net, cidr)
	case a == cidr.Addr():
		r.errorf(path, "the first address of a subnet names the network itself", "%s is the network address of %s", a, cidr)
	case a == broadcast(cidr):
		r.errorf(path, "the last address of a subnet is its broadcast address", "%s is the broadcast address of %s", a, cidr)
	case a == n.Gateway:
		r.errorf(path, "the gateway's address belongs to the router (or the host bridge)", "%s is the gateway of network %s", a, net)
	}
}

// netLabel names a network by role, adding its name when they differ.
func netLabel(role Role, name string) string {
	if string(role) == name {
		return "the " + name + " network"
	}
	return fmt.Sprintf("the %s network %q", role, name)
}

// machinePath is the YAML path of a machine's address on a network.
func machinePath(m Machine, net string) string {
	if m.Role == MachineControlPlane || m.Role == MachineWorker {
		return index(child(child(m.Path, "addresses"), net), m.Index)
	}
	return child(child(m.Path, "addresses"), net)
}

func (l *Lab) validateGuests(r *report) {
	// Explicit addresses naming unknown networks or pools' unattached networks.
	for _, g := range []struct {
		path string
		g    *Guest
	}{{"vpn", &l.VPN.Guest}, {"loadBalancer", &l.LoadBalancer.Guest}, {"manager", &l.Manager.Guest}} {
		for _, net := range sortedKeys(g.g.Addresses) {
			if _, ok := l.NetworkByName(net); !ok {
				l.addressCheck(r, child(child(g.path, "addresses"), net), net, g.g.Addresses[net])
			}
		}
		if g.g.VMID < 100 || g.g.VMID > 999999999 {
			r.errorf(child(g.path, "vmid"), "Proxmox guest IDs run from 100 to 999999999", "vmid %d is out of range", g.g.VMID)
		}
		l.checkSize(r, g.path, g.g.Cores, g.g.Memory)
	}

	ms := l.Machines()
	type holder struct{ name, path string }
	vmids := map[int]holder{}
	addrs := map[netip.Addr]string{}
	for _, m := range ms {
		if m.VMID != 0 {
			vp := child(m.Path, "vmid")
			if m.Role == MachineControlPlane || m.Role == MachineWorker {
				vp = child(m.Path, "vmidStart")
			}
			if other, dup := vmids[m.VMID]; dup {
				// Point at the VMID the user wrote, not at a default.
				at := vp
				if _, given := r.at[vp]; !given {
					if _, given := r.at[other.path]; given {
						at = other.path
					}
				}
				r.errorf(at, "give each guest its own VMID (pools count up from vmidStart)", "VMID %d is used by both %s and %s", m.VMID, other.name, m.Name)
			} else {
				vmids[m.VMID] = holder{m.Name, vp}
			}
		}
		if r.netsBroken {
			continue // addresses mean little until the networks are fixed
		}
		for _, nic := range m.NICs {
			if !nic.Address.IsValid() {
				continue
			}
			p := machinePath(m, nic.Network)
			l.addressCheck(r, p, nic.Network, nic.Address)
			if other, dup := addrs[nic.Address]; dup {
				r.errorf(p, "give each guest its own address, or leave it out to have one assigned", "%s of %s is already used by %s", nic.Address, m.Name, other)
			} else {
				addrs[nic.Address] = m.Name
			}
			// Pools on wan are reported once, on their networks list.
			if nic.Role == RoleWAN && m.Role == MachineManager {
				r.errorf(p, "only the load balancer and the VPN have a leg on the wan network; reach the manager through the VPN",
					"%s must not have an address on %s", m.Name, netLabel(nic.Role, nic.Network))
			}
			if nic.Role == RoleAdmin && m.Role == MachineLB {
				r.warnf(p, "a compromised load balancer would reach the Talos and Kubernetes APIs; keep it on wan and apps only",
					"the load balancer gets a leg on %s", netLabel(nic.Role, nic.Network))
			}
			if nic.Role == RoleApps && m.Role == MachineVPN {
				r.warnf(p, "VPN peers are meant to reach the admin network only; remove the VPN's apps address",
					"the VPN gets a leg on %s", netLabel(nic.Role, nic.Network))
			}
		}
	}
	if _, ok := l.NetworkByRole(RoleWAN); ok && !r.netsBroken {
		for _, m := range ms[:min(2, len(ms))] {
			if _, ok := m.Address(RoleWAN); !ok {
				r.errorf(m.Path, "", "%s has no address on the wan network", m.Name)
			}
		}
	}
}

// checkSize checks a single guest's cores and memory.
func (l *Lab) checkSize(r *report, path string, cores int, mem Size) {
	if cores < 1 {
		r.errorf(child(path, "cores"), "give at least 1 core", "%d cores is too few", cores)
	} else if l.Host.Cores > 0 && cores > l.Host.Cores {
		r.errorf(child(path, "cores"), fmt.Sprintf("a guest cannot have more cores than the host's %d", l.Host.Cores), "%d cores is more than the host has", cores)
	}
	if mem < 64*MiB {
		r.errorf(child(path, "memory"), "give at least 64MiB", "%s of memory is too little", mem)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (l *Lab) validateVPN(r *report) {
	v := &l.VPN
	checkPort(r, "vpn.listenPort", v.ListenPort)
	t := v.Tunnel
	switch {
	case !t.Addr().Is4():
		r.errorf("vpn.tunnel", "use an IPv4 subnet, for example 10.99.0.0/24", "%s is not IPv4", t)
	case t.Masked() != t:
		r.errorf("vpn.tunnel", fmt.Sprintf("did you mean %s?", t.Masked()), "%s has host bits set", t)
	case t.Bits() > 29:
		r.errorf("vpn.tunnel", "use a /29 or larger (10.99.0.0/24 by default)", "tunnel %s is too small", t)
	}
	if v.Endpoint != "" {
		if host, port, err := net.SplitHostPort(v.Endpoint); err != nil || host == "" {
			r.errorf("vpn.endpoint", "write host:port, for example vpn.example.org:51820", "invalid endpoint %q", v.Endpoint)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			r.errorf("vpn.endpoint", "write host:port, for example vpn.example.org:51820", "invalid port in endpoint %q", v.Endpoint)
		}
	} else if l.Host.Provider == ProviderProxmox {
		r.warnf("vpn", "set vpn.endpoint to the public name or address clients dial", "the VPN has no endpoint for client configs")
	}
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	server := l.VPNServerAddress()
	for i, p := range v.Peers {
		pp := index("vpn.peers", i)
		switch {
		case p.Name == "":
			r.errorf(child(pp, "name"), "name the device, for example laptop", "peer name is missing")
		case !reName.MatchString(p.Name):
			r.errorf(child(pp, "name"), "use lowercase letters, digits and '-'", "invalid peer name %q", p.Name)
		}
		if j, dup := names[p.Name]; dup && p.Name != "" {
			r.errorf(child(pp, "name"), "give each peer its own name", "peer name %q is already used by vpn.peers[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		ap := child(pp, "address")
		if p.Address.IsValid() && t.IsValid() {
			switch {
			case !t.Masked().Contains(p.Address):
				r.errorf(ap, fmt.Sprintf("use an address inside the tunnel %s, or leave it out", t.Masked()), "%s is outside the tunnel %s", p.Address, t.Masked())
			case p.Address == server:
				r.errorf(ap, "the server takes the tunnel's first address", "%s is the VPN server's address", p.Address)
			case p.Address == t.Masked().Addr() || p.Address == broadcast(t):
				r.errorf(ap, "use a host address of the tunnel", "%s is not a host address of %s", p.Address, t.Masked())
			}
			if j, dup := addrs[p.Address]; dup {
				r.errorf(ap, "give each peer its own address", "%s is already used by vpn.peers[%d]", p.Address, j)
			} else {
				addrs[p.Address] = i
			}
		}
		if p.PublicKey != "" {
			if k, err := base64.StdEncoding.DecodeString(p.PublicKey); err != nil || len(k) != 32 {
				r.errorf(child(pp, "publicKey"), "paste the output of wg pubkey (44 characters of base64), or leave it out to have homelab generate the key pair",
					"publicKey is not a WireGuard public key")
			}
		}
	}
	if len(v.Peers) == 0 {
		r.warnf("vpn", "add at least one peer (vpn.peers: [{name: laptop}]) or run homelab vpn peer add", "the VPN has no peers: nobody can reach the admin network")
	}
}

func checkPort(r *report, path string, port int) bool {
	if port < 1 || port > 65535 {
		r.errorf(path, "use a port from 1 to 65535", "port %d is out of range", port)
		return false
	}
	return true
}

func (l *Lab) validateLB(r *report) {
	lb := &l.LoadBalancer
	checkPort(r, "loadBalancer.adminPort", lb.AdminPort)
	for _, f := range []struct {
		name string
		v    int
	}{{"maxConnections", lb.MaxConnections}, {"perSourceLimit", lb.PerSourceLimit}, {"perSourceRate", lb.PerSourceRate}} {
		if f.v < 0 {
			r.errorf(child("loadBalancer", f.name), "use a positive number, or leave it out for the default", "%s must not be negative", f.name)
		}
	}
	if len(lb.Frontends) == 0 {
		r.warnf("loadBalancer.frontends", "leave frontends out for the defaults (80 and 443 to the workers' ingress)", "the load balancer has no frontends")
	}
	names := map[string]int{}
	ports := map[string]int{}
	for i, f := range lb.Frontends {
		fp := index("loadBalancer.frontends", i)
		switch {
		case f.Name == "":
			r.errorf(child(fp, "name"), "name the frontend, for example https", "frontend name is missing")
		case !reName.MatchString(f.Name):
			r.errorf(child(fp, "name"), "use lowercase letters, digits and '-'", "invalid frontend name %q", f.Name)
		}
		if j, dup := names[f.Name]; dup && f.Name != "" {
			r.errorf(child(fp, "name"), "give each frontend its own name", "frontend name %q is already used by loadBalancer.frontends[%d]", f.Name, j)
		} else {
			names[f.Name] = i
		}
		switch f.Protocol {
		case "tcp", "udp":
		default:
			r.errorf(child(fp, "protocol"), "use tcp or udp", "unknown protocol %q", f.Protocol)
		}
		if checkPort(r, child(fp, "port"), f.Port) {
			key := fmt.Sprintf("%d/%s", f.Port, f.Protocol)
			if j, dup := ports[key]; dup {
				r.errorf(child(fp, "port"), "each frontend needs its own port", "port %s is already used by loadBalancer.frontends[%d]", key, j)
			} else {
				ports[key] = i
			}
			if what, bad := sensitivePorts[f.Port]; bad {
				r.errorf(child(fp, "port"), "admin services are reached through the VPN on the admin network, never published on wan",
					"frontend port %d would expose %s on the wan network", f.Port, what)
			}
		}
		switch f.Balance {
		case "roundrobin", "leastconn", "p2c", "hash":
		default:
			r.errorf(child(fp, "balance"), "use roundrobin, leastconn, p2c or hash", "unknown balance %q", f.Balance)
		}
		switch f.ProxyProtocol {
		case "", "v1", "v2":
			if f.ProxyProtocol != "" && f.Protocol == "udp" {
				r.errorf(child(fp, "proxyProtocol"), "remove proxyProtocol from UDP frontends", "PROXY protocol is for TCP only")
			}
		default:
			r.errorf(child(fp, "proxyProtocol"), "use v1, v2, or leave it out", "unknown proxyProtocol %q", f.ProxyProtocol)
		}
		if f.Protocol == "udp" && f.HealthCheck != nil {
			r.errorf(child(fp, "healthCheck"), "remove healthCheck from UDP frontends", "health checks probe TCP, and this frontend is UDP")
		} else if hc := f.HealthCheck; hc != nil {
			hp := child(fp, "healthCheck")
			switch hc.Type {
			case "tcp":
			case "http", "https":
				if !strings.HasPrefix(hc.Path, "/") {
					r.errorf(child(hp, "path"), "for example path: /healthz", "path %q must start with /", hc.Path)
				}
				if hc.ExpectStatus < 100 || hc.ExpectStatus > 599 {
					r.errorf(child(hp, "expectStatus"), "use an HTTP status code, for example 200", "expectStatus %d is not an HTTP status", hc.ExpectStatus)
				}
			default:
				r.errorf(child(hp, "type"), "use tcp, http or https", "unknown health check type %q", hc.Type)
			}
			if hc.Timeout > hc.Interval {
				r.warnf(child(hp, "timeout"), "keep the timeout below the interval", "timeout %s is longer than the interval %s", hc.Timeout, hc.Interval)
			}
			if hc.Rise < 0 || hc.Fall < 0 {
				r.errorf(hp, "use positive counts", "rise and fall must not be negative")
			}
		}
		for j, p := range f.Allow {
			if p.IsValid() && p.Masked() != p {
				r.errorf(index(child(fp, "allow"), j), fmt.Sprintf("did you mean %s?", p.Masked()), "%s has host bits set", p)
			}
		}
		for j, p := range f.Deny {
			if p.IsValid() && p.Masked() != p {
				r.errorf(index(child(fp, "deny"), j), fmt.Sprintf("did you mean %s?", p.Masked()), "%s has host bits set", p)
			}
		}

		bp := child(fp, "backends")
		b := f.Backends
		var pool *NodePool
		switch b.Role {
		case string(MachineWorker):
			pool = &l.Cluster.Workers
		case string(MachineControlPlane):
			pool = &l.Cluster.ControlPlanes
			r.errorf(child(bp, "role"), "frontends are public: reach the control planes through the VPN, and send LB traffic to the workers' ingress",
				"frontend %q would expose the control planes on the wan network", f.Name)
		case "":
			r.errorf(child(bp, "role"), "set role: worker", "backend role is missing")
		default:
			r.errorf(child(bp, "role"), "use worker (or controlplane, never on a public frontend)", "unknown backend role %q", b.Role)
		}
		if checkPort(r, child(bp, "port"), b.Port) {
			if what, bad := sensitivePorts[b.Port]; bad {
				r.errorf(child(bp, "port"), "send LB traffic only to the ingress ports (30080, 30443 by default)",
					"backend port %d would expose %s on the wan network", b.Port, what)
			}
		}
		if pool != nil && b.Role == string(MachineWorker) && !r.netsBroken {
			if pool.Count == 0 && !r.failed["cluster.workers.count"] {
				r.errorf(bp, "add workers (cluster.workers.count) or remove the frontend", "frontend %q targets workers but the cluster has none", f.Name)
			}
			if n, ok := l.NetworkByName(b.Network); !ok {
				r.errorf(child(bp, "network"), "name a network the backends attach to (apps for workers)", "no network is named %q", b.Network)
			} else {
				if !slices.Contains(pool.Networks, b.Network) {
					r.errorf(child(bp, "network"), "attach the pool to that network (networks: [...]) or pick one it has", "the %ss do not attach to network %s", b.Role, b.Network)
				}
				if !slices.Contains(l.guestNetworks(lb.Guest, RoleWAN, RoleApps), b.Network) {
					r.errorf(child(bp, "network"), "the load balancer reaches backends over the apps network", "the load balancer has no leg on network %s", b.Network)
				}
				if n.Role == RoleAdmin {
					r.warnf(child(bp, "network"), "send LB traffic over the apps network", "backends are reached over the admin network")
				}
			}
		}
	}
}

func (l *Lab) validateManager(r *report) {
	m := &l.Manager
	if !reUser.MatchString(m.User) {
		r.errorf("manager.user", "use a Linux user name, for example admin", "invalid user name %q", m.User)
	}
	for i, k := range m.SSHKeys {
		ok := false
		for _, p := range sshKeyPrefix {
			ok = ok || strings.HasPrefix(k, p)
		}
		if !ok || strings.ContainsAny(k, "\n\r") {
			r.errorf(index("manager.sshKeys", i), "paste one public key line, for example the content of ~/.ssh/id_ed25519.pub",
				"not an SSH public key")
		}
		if strings.Contains(k, "PRIVATE KEY") {
			r.errorf(index("manager.sshKeys", i), "paste the .pub file, never the private key", "this is a private key")
		}
	}
	if u, err := url.Parse(m.Image); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		r.errorf("manager.image", "give the URL of a Debian cloud image (qcow2)", "invalid image URL %q", m.Image)
	}
	for _, t := range []struct{ name, v string }{{"talosctl", m.Tools.Talosctl}, {"kubectl", m.Tools.Kubectl}, {"flux", m.Tools.Flux}, {"k9s", m.Tools.K9s}} {
		if t.v != "" && !reVersion.MatchString(t.v) {
			r.errorf(child("manager.tools", t.name), "pin an exact release, for example v1.2.3", "invalid version %q", t.v)
		}
	}
}

func (l *Lab) validateCluster(r *report) {
	c := &l.Cluster
	if c.Name != "" && (!reName.MatchString(c.Name) || len(c.Name) > 63) {
		r.errorf("cluster.name", "use lowercase letters, digits and '-'", "invalid cluster name %q", c.Name)
	}
	var tv *compatibility.TalosVersion
	switch {
	case c.TalosVersion == "":
		r.errorf("cluster.talosVersion", "for example talosVersion: v1.13.9", "talosVersion is missing")
	case !reVersion.MatchString(c.TalosVersion):
		r.errorf("cluster.talosVersion", "write a release tag, for example v1.13.9", "invalid Talos version %q", c.TalosVersion)
	default:
		tv, _ = compatibility.ParseTalosVersion(&machine.VersionInfo{Tag: c.TalosVersion})
		if _, _, known := kubernetesRange(tv); tv == nil || !known {
			r.errorf("cluster.talosVersion", "use a Talos release this build knows, for example v1.13.9",
				"Talos %s is not in Talos's compatibility table", c.TalosVersion)
			tv = nil
		}
	}
	switch {
	case c.KubernetesVersion == "":
		r.errorf("cluster.kubernetesVersion", "for example kubernetesVersion: v1.36.3", "kubernetesVersion is missing")
	case !reVersion.MatchString(c.KubernetesVersion):
		r.errorf("cluster.kubernetesVersion", "write a release, for example v1.36.3", "invalid Kubernetes version %q", c.KubernetesVersion)
	case tv != nil:
		kv, err := compatibility.ParseKubernetesVersion(c.KubernetesVersion)
		if err == nil {
			err = kv.SupportedWith(tv)
		}
		if err != nil {
			hint := "pick a Kubernetes version that this Talos release supports (see the Talos support matrix)"
			if lo, hi, ok := kubernetesRange(tv); ok {
				hint = fmt.Sprintf("Talos %s supports Kubernetes v1.%d to v1.%d", c.TalosVersion, lo, hi)
			}
			r.errorf("cluster.kubernetesVersion", hint,
				"Talos %s does not support Kubernetes %s: %v", c.TalosVersion, c.KubernetesVersion, err)
		}
	}
	if c.Endpoint != "" && !r.netsBroken {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil || u.Host == "":
			r.errorf("cluster.endpoint", "for example endpoint: https://10.10.1.10:6443", "invalid endpoint URL %q", c.Endpoint)
		case u.Scheme != "https":
			r.errorf("cluster.endpoint", "the Kubernetes API is served over TLS: use https://", "endpoint %q must use https", c.Endpoint)
		default:
			if a, err := netip.ParseAddr(u.Hostname()); err == nil {
				if wan, ok := l.NetworkByRole(RoleWAN); ok && wan.CIDR.IsValid() && wan.CIDR.Masked().Contains(a) {
					r.errorf("cluster.endpoint", "the Kubernetes API lives on the admin network, reached through the VPN",
						"endpoint %s is on the wan network", a)
				} else if admin, ok := l.NetworkByRole(RoleAdmin); ok && admin.CIDR.IsValid() && !admin.CIDR.Masked().Contains(a) {
					r.warnf("cluster.endpoint", "use a control plane's admin address (the default)", "endpoint %s is not on the admin network", a)
				}
			}
		}
	}
	if !strings.HasPrefix(c.InstallDisk, "/dev/") {
		r.errorf("cluster.installDisk", "for example installDisk: /dev/sda (Proxmox SCSI) or /dev/vda (virtio-blk)", "installDisk %q is not a device path", c.InstallDisk)
	}
	seen := map[string]bool{}
	for i, e := range c.Extensions {
		p := index("cluster.extensions", i)
		if !reExtension.MatchString(e) {
			r.errorf(p, "write owner/name as listed by the Image Factory, for example siderolabs/qemu-guest-agent", "invalid extension %q", e)
		}
		if seen[e] {
			r.errorf(p, "list each extension once", "extension %q is listed twice", e)
		}
		seen[e] = true
	}

	pools := []struct {
		p    *NodePool
		path string
		what string
		min  Guest
	}{
		{&c.ControlPlanes, "cluster.controlPlanes", "control plane", minControlPlane},
		{&c.Workers, "cluster.workers", "worker", minWorker},
	}
	for _, pl := range pools {
		p := pl.p
		if p.VMIDStart < 100 || p.VMIDStart > 999999000 {
			r.errorf(child(pl.path, "vmidStart"), "Proxmox guest IDs run from 100 to 999999999", "vmidStart %d is out of range", p.VMIDStart)
		}
		if p.Cores < pl.min.Cores {
			r.errorf(child(pl.path, "cores"), fmt.Sprintf("give each %s at least %d cores", pl.what, pl.min.Cores),
				"%d cores is below Talos's minimum of %d for a %s", p.Cores, pl.min.Cores, pl.what)
		} else if l.Host.Cores > 0 && p.Cores > l.Host.Cores {
			r.errorf(child(pl.path, "cores"), fmt.Sprintf("a guest cannot have more cores than the host's %d", l.Host.Cores), "%d cores is more than the host has", p.Cores)
		}
		if p.Memory < pl.min.Memory {
			r.errorf(child(pl.path, "memory"), fmt.Sprintf("give each %s at least %s", pl.what, pl.min.Memory),
				"%s is below Talos's minimum of %s for a %s", p.Memory, pl.min.Memory, pl.what)
		}
		if p.Disk < pl.min.Disk {
			r.errorf(child(pl.path, "disk"), fmt.Sprintf("give each %s at least %s", pl.what, pl.min.Disk),
				"%s is below Talos's minimum of %s for a %s", p.Disk, pl.min.Disk, pl.what)
		}
		if r.netsBroken {
			continue // the networks section is reported first
		}
		nets := map[string]bool{}
		for i, name := range p.Networks {
			np := index(child(pl.path, "networks"), i)
			n, ok := l.NetworkByName(name)
			switch {
			case !ok:
				r.errorf(np, "name one of the networks", "no network is named %q", name)
			case n.Role == RoleWAN:
				r.errorf(np, "cluster nodes live on admin (and workers on apps); only the LB and the VPN face the wan network",
					"%ss must not attach to %s", pl.what, netLabel(n.Role, name))
			}
			if nets[name] {
				r.errorf(np, "list each network once", "network %q is listed twice", name)
			}
			nets[name] = true
		}
		if admin, ok := l.NetworkByRole(RoleAdmin); ok && !nets[admin.Name] {
			r.errorf(child(pl.path, "networks"), "add "+admin.Name+": Talos and Kubernetes are administered over the admin network",
				"%ss do not attach to the admin network", pl.what)
		}
		for _, net := range sortedKeys(p.Addresses) {
			ap := child(child(pl.path, "addresses"), net)
			if _, known := l.NetworkByName(net); known && !nets[net] {
				r.errorf(ap, "add the network to networks, or remove these addresses", "%ss do not attach to network %s", pl.what, net)
			}
			if len(p.Addresses[net]) > p.Count {
				r.errorf(ap, "give at most one address per node", "%d addresses for %d nodes", len(p.Addresses[net]), p.Count)
			}
			if _, known := l.NetworkByName(net); !known {
				l.addressCheck(r, ap, net, netip.Addr{})
			}
		}
	}
	switch n := c.ControlPlanes.Count; {
	case n == 0:
		r.errorf("cluster.controlPlanes.count", "use 1 for a small lab, 3 for high availability", "the cluster needs at least one control plane")
	case n%2 == 0:
		r.warnf("cluster.controlPlanes.count", fmt.Sprintf("use %d or %d: etcd needs a majority, so %d control planes tolerate no more failures than %d", n-1, n+1, n, n-1),
			"an even number of control planes (%d)", n)
	}
	if c.Workers.Count == 0 {
		r.warnf("cluster.workers.count", "add workers; the load balancer sends traffic to the workers' ingress", "the cluster has no workers")
	}
}

// kubernetesRange asks Talos's own compatibility table which Kubernetes
// minor versions (1.lo to 1.hi) a Talos version supports.
func kubernetesRange(tv *compatibility.TalosVersion) (lo, hi int, ok bool) {
	for minor := 0; minor < 100; minor++ {
		kv, err := compatibility.ParseKubernetesVersion(fmt.Sprintf("1.%d.0", minor))
		if err != nil || kv.SupportedWith(tv) != nil {
			continue
		}
		if !ok {
			lo, ok = minor, true
		}
		hi = minor
	}
	return lo, hi, ok
}

func (l *Lab) validateGitOps(r *report) {
	g := &l.GitOps
	if g.Engine != "flux" {
		r.errorf("gitops.engine", "use engine: flux", "unsupported GitOps engine %q", g.Engine)
	}
	if g.Repository != "" {
		if u, err := url.Parse(g.Repository); (err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "ssh")) && !strings.HasPrefix(g.Repository, "git@") {
			r.errorf("gitops.repository", "write an https:// or ssh:// Git URL (or git@host:owner/repo.git), or leave it out to host it on the manager", "invalid repository URL %q", g.Repository)
		}
	}
	names := map[string]int{}
	for i, a := range g.Apps {
		ap := index("gitops.apps", i)
		switch {
		case a.Name == "":
			r.errorf(child(ap, "name"), "for example name: nextcloud", "app name is missing")
		case !slices.Contains(KnownApps, a.Name):
			r.warnf(child(ap, "name"), "homelab has templates for "+strings.Join(KnownApps, " and ")+"; other apps need their manifests added to the GitOps repository by hand",
				"unknown app %q", a.Name)
		}
		if j, dup := names[a.Name]; dup && a.Name != "" {
			r.errorf(child(ap, "name"), "declare each app once", "app %q is already declared at gitops.apps[%d]", a.Name, j)
		} else {
			names[a.Name] = i
		}
		if a.Host != "" && (!reDNSName.MatchString(a.Host) || len(a.Host) > 253) {
			r.errorf(child(ap, "host"), "use a DNS name in lowercase, for example cloud.example.org", "invalid host name %q", a.Host)
		}
	}
}

func (l *Lab) validateCapacity(r *report) {
	h := &l.Host
	if h.Memory == 0 || h.Disk == 0 || h.Cores < 1 || h.Reserve.Memory >= h.Memory || h.Reserve.Disk >= h.Disk {
		return // reported on the host already
	}
	b := l.Budget()
	if b.Used.Memory > b.Available.Memory {
		r.errorf("host.memory", "shrink guests (workers first) or add RAM; homelab validate prints the budget",
			"guests need %s of memory but the host has %s after the %s reserve", human(b.Used.Memory), human(b.Available.Memory), human(h.Reserve.Memory))
	}
	if b.Used.Disk > b.Available.Disk {
		r.errorf("host.disk", "shrink guest disks or add storage; homelab validate prints the budget",
			"guests need %s of disk but the host has %s after the %s reserve", human(b.Used.Disk), human(b.Available.Disk), human(h.Reserve.Disk))
	}
	if b.Available.Cores > 0 && b.Used.Cores > CoreOvercommit*b.Available.Cores {
		r.warnf("host.cores", fmt.Sprintf("vCPUs are shared, but beyond %d per core guests wait for CPU; give guests fewer cores", CoreOvercommit),
			"guests have %d vCPUs for %d host cores", b.Used.Cores, b.Available.Cores)
	}
	var storage Size
	for _, a := range l.GitOps.Apps {
		storage = addSize(storage, a.Storage)
	}
	w := l.Cluster.Workers
	if w.Count > 0 && w.Disk > 10*GiB && w.Disk < 1<<56 && storage > Size(w.Count)*(w.Disk-10*GiB) {
		r.warnf("gitops.apps", "persistent volumes live on the workers' disks; grow cluster.workers.disk",
			"apps ask for %s of storage but the workers have about %s free after Talos", human(storage), human(Size(w.Count)*(w.Disk-10*GiB)))
	}
}

package spec

import (
	"net/netip"
	"strings"
	"testing"
)

// minimal is the smallest valid lab: everything else is defaulted.
const minimal = `apiVersion: homelab/v1alpha1
kind: Lab
name: lab
host: {memory: 16GiB, disk: 500GiB, cores: 4}
vpn:
  peers: [{name: laptop}, {name: phone, address: 10.99.0.2}, {name: tablet}]
cluster:
  talosVersion: v1.13.9
  kubernetesVersion: v1.36.3
  controlPlanes: {count: 3, memory: 2GiB}
  workers: {count: 2, memory: 2GiB}
`

func mustParse(t *testing.T, src string) *Lab {
	t.Helper()
	lab, warns, err := Parse("lab.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, w := range warns {
		t.Logf("warning: %v", w)
	}
	return lab
}

func TestAddressAssignment(t *testing.T) {
	lab := mustParse(t, minimal)
	want := map[string]map[string]string{
		"lab-vpn":      {"wan": "192.168.1.2", "admin": "10.10.1.2"},
		"lab-lb":       {"wan": "192.168.1.3", "apps": "10.10.2.3"},
		"lab-manager":  {"admin": "10.10.1.5"},
		"lab-cp-1":     {"admin": "10.10.1.10"},
		"lab-cp-2":     {"admin": "10.10.1.11"},
		"lab-cp-3":     {"admin": "10.10.1.12"},
		"lab-worker-1": {"admin": "10.10.1.20", "apps": "10.10.2.20"},
		"lab-worker-2": {"admin": "10.10.1.21", "apps": "10.10.2.21"},
	}
	ms := lab.Machines()
	if len(ms) != len(want) {
		t.Fatalf("Machines() has %d guests, want %d", len(ms), len(want))
	}
	for _, m := range ms {
		w := want[m.Name]
		if len(m.NICs) != len(w) {
			t.Errorf("%s has %d NICs, want %d", m.Name, len(m.NICs), len(w))
		}
		for _, nic := range m.NICs {
			if got := nic.Address.String(); got != w[nic.Network] {
				t.Errorf("%s on %s = %s, want %s", m.Name, nic.Network, got, w[nic.Network])
			}
		}
	}
	if got := lab.VPN.Endpoint; got != "192.168.1.2:51820" {
		t.Errorf("VPN endpoint = %q, want 192.168.1.2:51820", got)
	}
	if got := lab.Cluster.Endpoint; got != "https://10.10.1.10:6443" {
		t.Errorf("cluster endpoint = %q, want https://10.10.1.10:6443", got)
	}
	// Peers: phone asked for .2, so laptop and tablet take .3 and .4.
	peers := map[string]string{"laptop": "10.99.0.3", "phone": "10.99.0.2", "tablet": "10.99.0.4"}
	for _, p := range lab.VPN.Peers {
		if p.Address.String() != peers[p.Name] {
			t.Errorf("peer %s = %s, want %s", p.Name, p.Address, peers[p.Name])
		}
	}
	if got := lab.VPNServerAddress(); got != netip.MustParseAddr("10.99.0.1") {
		t.Errorf("VPNServerAddress() = %s, want 10.99.0.1", got)
	}
}

func TestAddressAssignmentSkipsTaken(t *testing.T) {
	// The manager takes .11 explicitly: control plane 1 gets .10, control
	// plane 2 would get .11 but skips to .12, and control plane 3 (from .12)
	// gets .13. Worker 1 gives its apps address; worker 2 starts at .21.
	src := strings.Replace(minimal, "cluster:\n", "manager:\n  addresses: {admin: 10.10.1.11}\ncluster:\n", 1)
	src = strings.Replace(src, "workers: {count: 2, memory: 2GiB}",
		"workers: {count: 2, memory: 2GiB, addresses: {apps: [10.10.2.21]}}", 1)
	lab := mustParse(t, src)
	tests := []struct {
		pool *NodePool
		net  string
		want []string
	}{
		{&lab.Cluster.ControlPlanes, "admin", []string{"10.10.1.10", "10.10.1.12", "10.10.1.13"}},
		{&lab.Cluster.Workers, "apps", []string{"10.10.2.21", "10.10.2.22"}},
		{&lab.Cluster.Workers, "admin", []string{"10.10.1.20", "10.10.1.21"}},
	}
	for _, tt := range tests {
		got := tt.pool.Addresses[tt.net]
		if len(got) != len(tt.want) {
			t.Errorf("addresses on %s = %v, want %v", tt.net, got, tt.want)
			continue
		}
		for i := range tt.want {
			if got[i].String() != tt.want[i] {
				t.Errorf("node %d on %s = %s, want %s", i+1, tt.net, got[i], tt.want[i])
			}
		}
	}
}

func TestAddressAssignmentTooSmall(t *testing.T) {
	src := minimal + "networks:\n  - {name: wan, role: wan, cidr: 192.168.1.0/24}\n  - {name: admin, role: admin, cidr: 10.10.1.0/28}\n  - {name: apps, role: apps, cidr: 10.10.2.0/24}\n"
	_, _, err := Parse("lab.yaml", []byte(src))
	ds := Diagnostics(err)
	found := false
	for _, d := range ds {
		if strings.Contains(d.Msg, "no free address left on network admin") {
			found = true
		}
	}
	if !found {
		t.Errorf("a /28 admin network with workers from .20: want a no-free-address error, got %v", err)
	}
}

func TestOffset(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/29")
	tests := []struct {
		n    int
		want string
		ok   bool
	}{
		{0, "", false}, // network address
		{1, "10.0.0.1", true},
		{6, "10.0.0.6", true},
		{7, "", false}, // broadcast
		{20, "", false},
	}
	for _, tt := range tests {
		a, ok := offset(p, tt.n)
		if ok != tt.ok || (ok && a.String() != tt.want) {
			t.Errorf("offset(%s, %d) = %s, %v; want %s, %v", p, tt.n, a, ok, tt.want, tt.ok)
		}
	}
	if got := broadcast(netip.MustParsePrefix("10.10.0.0/16")); got.String() != "10.10.255.255" {
		t.Errorf("broadcast(10.10.0.0/16) = %s", got)
	}
}

func TestDefaults(t *testing.T) {
	lab := mustParse(t, minimal)
	checks := []struct {
		name      string
		got, want any
	}{
		{"provider", lab.Host.Provider, ProviderLocal},
		{"reserve memory", lab.Host.Reserve.Memory, 2 * GiB},
		{"reserve disk", lab.Host.Reserve.Disk, 32 * GiB},
		{"networks", len(lab.Networks), 3},
		{"wan bridge", lab.Networks[0].Bridge, "vmbr0"},
		{"admin gateway", lab.Networks[1].Gateway.String(), "10.10.1.1"},
		{"apps bridge", lab.Networks[2].Bridge, "vmbr2"},
		{"vpn port", lab.VPN.ListenPort, 51820},
		{"tunnel", lab.VPN.Tunnel.String(), "10.99.0.0/24"},
		{"vpn vmid", lab.VPN.VMID, 100},
		{"lb vmid", lab.LoadBalancer.VMID, 101},
		{"manager vmid", lab.Manager.VMID, 110},
		{"cp vmid", lab.Cluster.ControlPlanes.VMIDStart, 200},
		{"worker vmid", lab.Cluster.Workers.VMIDStart, 210},
		{"lb admin port", lab.LoadBalancer.AdminPort, 8404},
		{"frontends", len(lab.LoadBalancer.Frontends), 2},
		{"https backend", lab.LoadBalancer.Frontends[1].Backends, BackendRef{Role: "worker", Port: 30443, Network: "apps"}},
		{"proxy protocol", lab.LoadBalancer.Frontends[0].ProxyProtocol, "v2"},
		{"health check", lab.LoadBalancer.Frontends[0].HealthCheck.Type, "tcp"},
		{"max connections", lab.LoadBalancer.MaxConnections, 20000},
		{"per source", lab.LoadBalancer.PerSourceLimit, 256},
		{"per source rate", lab.LoadBalancer.PerSourceRate, 100},
		{"cluster name", lab.Cluster.Name, "lab"},
		{"install disk", lab.Cluster.InstallDisk, "/dev/sda"},
		{"extensions", strings.Join(lab.Cluster.Extensions, ","), "siderolabs/qemu-guest-agent"},
		{"cp networks", strings.Join(lab.Cluster.ControlPlanes.Networks, ","), "admin"},
		{"worker networks", strings.Join(lab.Cluster.Workers.Networks, ","), "admin,apps"},
		{"manager user", lab.Manager.User, "admin"},
		{"talosctl", lab.Manager.Tools.Talosctl, "v1.13.9"},
		{"kubectl", lab.Manager.Tools.Kubectl, "v1.36.3"},
		{"flux", lab.Manager.Tools.Flux, "v2.9.5"},
		{"k9s", lab.Manager.Tools.K9s, "v0.50.16"},
		{"engine", lab.GitOps.Engine, "flux"},
		{"branch", lab.GitOps.Branch, "main"},
		{"lb size", lab.LoadBalancer.Memory, 256 * MiB},
		{"manager size", lab.Manager.Disk, 16 * GiB},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestVersionWithoutV(t *testing.T) {
	src := strings.Replace(minimal, "talosVersion: v1.13.9", "talosVersion: 1.13.9", 1)
	lab := mustParse(t, src)
	if lab.Cluster.TalosVersion != "v1.13.9" {
		t.Errorf("talosVersion 1.13.9 = %q, want v1.13.9", lab.Cluster.TalosVersion)
	}
}

func TestExplicitLab(t *testing.T) {
	lab, warns, err := Load("testdata/good/explicit.yaml")
	if err != nil || len(warns) > 0 {
		t.Fatalf("Load: %v %v", err, warns)
	}
	w := lab.Cluster.Workers.Addresses
	if got := w["mgmt"]; len(got) != 3 || got[0].String() != "172.16.10.20" || got[1].String() != "172.16.10.21" || got[2].String() != "172.16.10.22" {
		t.Errorf("workers on mgmt = %v, want .20 (given), .21, .22", got)
	}
	if g := lab.Networks[1].Gateway.String(); g != "172.16.10.254" {
		t.Errorf("explicit gateway replaced: %s", g)
	}
	if g := lab.Networks[2].Gateway.String(); g != "172.16.20.1" {
		t.Errorf("apps gateway = %s, want the first address", g)
	}
	udp := lab.LoadBalancer.Frontends[1]
	if udp.HealthCheck != nil || udp.ProxyProtocol != "" || udp.Backends.Network != "ingress" {
		t.Errorf("udp frontend = %+v, want no health check, no PROXY protocol, backends on ingress", udp)
	}
	if p := lab.VPN.Peers[1].Address.String(); p != "10.200.0.2" {
		t.Errorf("second peer = %s, want 10.200.0.2", p)
	}
	ms := lab.Machines()
	if ms[3].Name != "home-1-cp-1" || ms[3].VMID != 400 || ms[len(ms)-1].VMID != 502 {
		t.Errorf("machines = %s %d ... %d", ms[3].Name, ms[3].VMID, ms[len(ms)-1].VMID)
	}
	if nic, _ := ms[1].NIC(RoleApps); nic.VLAN != 20 || nic.Bridge != "vmbr20" {
		t.Errorf("lb apps NIC = %+v", nic)
	}
}

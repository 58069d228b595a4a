package talos

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// testLab builds a reference-like lab by hand (the spec loader is not
// involved): three networks, controlPlanes control planes on admin, two
// workers on admin and apps, every address given.
func testLab(talosVersion string, controlPlanes int) *spec.Lab {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	lab := &spec.Lab{
		APIVersion: spec.APIVersion,
		Kind:       spec.Kind,
		Name:       "lab",
		Networks: []spec.Network{
			{Name: "wan", Role: spec.RoleWAN, Bridge: "vmbr0", CIDR: p("192.168.1.0/24"), Gateway: a("192.168.1.1")},
			{Name: "admin", Role: spec.RoleAdmin, Bridge: "vmbr1", CIDR: p("10.10.1.0/24"), Gateway: a("10.10.1.1")},
			{Name: "apps", Role: spec.RoleApps, Bridge: "vmbr2", CIDR: p("10.10.2.0/24"), Gateway: a("10.10.2.1")},
		},
		VPN: spec.VPN{
			Guest: spec.Guest{Addresses: map[string]netip.Addr{"wan": a("192.168.1.20"), "admin": a("10.10.1.2")}},
			Peers: []spec.Peer{{Name: "laptop"}},
		},
		LoadBalancer: spec.LoadBalancer{
			Guest: spec.Guest{Addresses: map[string]netip.Addr{"wan": a("192.168.1.21"), "apps": a("10.10.2.2")}},
		},
		Manager: spec.Manager{
			Guest: spec.Guest{Addresses: map[string]netip.Addr{"admin": a("10.10.1.5")}},
		},
		Cluster: spec.Cluster{
			TalosVersion:      talosVersion,
			KubernetesVersion: "v1.36.3",
			InstallDisk:       "/dev/sda",
			Extensions:        []string{"siderolabs/qemu-guest-agent"},
			ControlPlanes: spec.NodePool{
				Count: controlPlanes, Cores: 2, Memory: 2 << 30, Disk: 10 << 30,
				Networks:  []string{"admin"},
				Addresses: map[string][]netip.Addr{"admin": []netip.Addr{a("10.10.1.11"), a("10.10.1.12"), a("10.10.1.13")}[:controlPlanes]},
			},
			Workers: spec.NodePool{
				Count: 2, Cores: 2, Memory: 3 << 30, Disk: 20 << 30,
				Networks: []string{"admin", "apps"},
				Addresses: map[string][]netip.Addr{
					"admin": {a("10.10.1.21"), a("10.10.1.22")},
					"apps":  {a("10.10.2.21"), a("10.10.2.22")},
				},
			},
		},
	}
	return lab
}

var (
	bundleOnce sync.Once
	bundle     *secrets.Bundle
	bundleErr  error
)

// testBundle is one secrets bundle shared by the tests (generating the
// Talos keys takes a while).
func testBundle(t *testing.T) *secrets.Bundle {
	t.Helper()
	bundleOnce.Do(func() {
		bundle = &secrets.Bundle{}
		_, bundleErr = bundle.Fill(testLab("v1.13.9", 1))
	})
	if bundleErr != nil {
		t.Fatalf("creating the test secrets bundle: %v", bundleErr)
	}
	return bundle
}

//lint:file-ignore SA1019 Talos before 1.12 reads only the legacy machine.network section.

package talos

import (
	"net/netip"
	"slices"
	"testing"

	coreconfig "github.com/siderolabs/talos/pkg/machinery/config"

	"github.com/homelab-dev/homelab/internal/spec"
)

func checkLegacyNetwork(t *testing.T, m spec.Machine, cfg coreconfig.Provider) {
	t.Helper()
	nc := cfg.RawV1Alpha1().MachineConfig.MachineNetwork
	if nc == nil {
		t.Fatalf("%s: no machine.network", m.Name)
	}
	if nc.NetworkHostname != m.Name {
		t.Errorf("%s: machine.network.hostname = %q", m.Name, nc.NetworkHostname)
	}
	if len(nc.NetworkInterfaces) != len(m.NICs) {
		t.Fatalf("%s: %d interfaces, want %d", m.Name, len(nc.NetworkInterfaces), len(m.NICs))
	}
	for i, nic := range m.NICs {
		d := nc.NetworkInterfaces[i]
		if d.DeviceSelector == nil || d.DeviceSelector.NetworkDeviceHardwareAddress != nic.MAC.String() {
			t.Errorf("%s: interface %d does not select hardwareAddr %s", m.Name, i, nic.MAC)
		}
		if want := netip.PrefixFrom(nic.Address, 24).String(); !slices.Equal(d.DeviceAddresses, []string{want}) {
			t.Errorf("%s: interface %d addresses = %v, want [%s]", m.Name, i, d.DeviceAddresses, want)
		}
		wantRoutes := 0
		if nic.Role == spec.RoleAdmin {
			wantRoutes = 1
		}
		if len(d.DeviceRoutes) != wantRoutes {
			t.Errorf("%s: interface %d has %d routes, want %d", m.Name, i, len(d.DeviceRoutes), wantRoutes)
		} else if wantRoutes == 1 && (d.DeviceRoutes[0].RouteGateway != "10.10.1.1" || d.DeviceRoutes[0].RouteNetwork != "0.0.0.0/0") {
			t.Errorf("%s: interface %d route = %+v, want default via 10.10.1.1", m.Name, i, d.DeviceRoutes[0])
		}
	}
}

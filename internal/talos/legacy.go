//lint:file-ignore SA1019 Talos before 1.12 reads only the legacy machine.network section.

package talos

import (
	"net/netip"

	"github.com/siderolabs/talos/pkg/machinery/config/types/v1alpha1"

	"github.com/homelab-dev/homelab/internal/spec"
)

// legacyNetwork writes the node's hostname and interfaces into the
// v1alpha1 machine.network section (Talos before 1.12).
func legacyNetwork(mc *v1alpha1.MachineConfig, m spec.Machine) {
	nc := &v1alpha1.NetworkConfig{NetworkHostname: m.Name}
	for _, n := range m.NICs {
		dev := &v1alpha1.Device{
			DeviceSelector:  &v1alpha1.NetworkDeviceSelector{NetworkDeviceHardwareAddress: n.MAC.String()},
			DeviceAddresses: []string{netip.PrefixFrom(n.Address, n.Prefix.Bits()).String()},
		}
		if n.Role == spec.RoleAdmin && n.Gateway.IsValid() {
			dev.DeviceRoutes = []*v1alpha1.Route{{RouteNetwork: "0.0.0.0/0", RouteGateway: n.Gateway.String()}}
		}
		nc.NetworkInterfaces = append(nc.NetworkInterfaces, dev)
	}
	mc.MachineNetwork = nc
}

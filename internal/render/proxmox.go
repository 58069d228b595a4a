package render

import (
	"fmt"
	"strings"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// renderProxmox writes the /etc/network/interfaces fragment of the Proxmox
// host: one bridge per internal network (admin, apps) with the host as its
// gateway. The wan bridge is the one Proxmox made at install on the
// physical NIC; it is named but not redefined.
func renderProxmox(lab *spec.Lab, _ *secrets.Bundle) ([]Artifact, error) {
	var b strings.Builder
	b.WriteString(header(lab, "bridges for /etc/network/interfaces on the Proxmox host"))
	b.WriteString("# Append to /etc/network/interfaces (or put in /etc/network/interfaces.d/),\n")
	b.WriteString("# then run: ifreload -a\n")
	b.WriteString("# Routing and NAT between the bridges: nftables/host.nft.\n")
	for _, n := range lab.Networks {
		if n.Bridge == "" || !n.CIDR.IsValid() {
			return nil, fmt.Errorf("network %s: needs a bridge and a CIDR", n.Name)
		}
		b.WriteString("\n")
		if n.Role == spec.RoleWAN {
			fmt.Fprintf(&b, "# homelab:%s network %s (%s, %s): the bridge on the physical NIC that\n", lab.Name, n.Name, n.Role, n.CIDR)
			fmt.Fprintf(&b, "# the Proxmox installer created; %s must exist and is left as it is.\n", n.Bridge)
			continue
		}
		fmt.Fprintf(&b, "# homelab:%s network %s (%s, %s)\n", lab.Name, n.Name, n.Role, n.CIDR)
		fmt.Fprintf(&b, "auto %s\niface %s inet static\n", n.Bridge, n.Bridge)
		if n.Gateway.IsValid() {
			fmt.Fprintf(&b, "\taddress %s/%d\n", n.Gateway, n.CIDR.Bits())
		}
		b.WriteString("\tbridge-ports none\n\tbridge-stp off\n\tbridge-fd 0\n")
		if n.VLAN != 0 {
			fmt.Fprintf(&b, "\tbridge-vlan-aware yes\n\tbridge-vids %d\n", n.VLAN)
		}
		b.WriteString("\tpost-up sysctl -q -w net.ipv4.ip_forward=1\n")
	}
	return []Artifact{{Path: "proxmox/interfaces", Data: []byte(b.String())}}, nil
}

package render

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// PersistentKeepalive keeps clients behind NAT reachable (seconds).
const PersistentKeepalive = 25

// renderWireGuard writes the server's wg-quick config and one client
// config per peer. Clients get a split tunnel: only the admin network goes
// through it.
func renderWireGuard(lab *spec.Lab, b *secrets.Bundle) ([]Artifact, error) {
	v := &lab.VPN
	admin, ok := lab.NetworkByRole(spec.RoleAdmin)
	if !ok {
		return nil, fmt.Errorf("the lab has no admin network")
	}
	if b.WireGuard.Server.Private == "" || b.WireGuard.Server.Public == "" {
		return nil, fmt.Errorf("the secrets bundle has no wireguard server key")
	}
	if !v.Tunnel.IsValid() || v.ListenPort == 0 || v.Endpoint == "" {
		return nil, fmt.Errorf("vpn: needs a tunnel subnet, a listen port and an endpoint")
	}
	server := lab.VPNServerAddress()

	var s strings.Builder
	s.WriteString(header(lab, "WireGuard server, interface "+firewall.TunnelInterface))
	s.WriteString("# Peers reach the admin network only; the VPN container's nftables\n# ruleset (nftables/vpn.nft) enforces it.\n")
	s.WriteString("[Interface]\n")
	fmt.Fprintf(&s, "Address = %s\n", netip.PrefixFrom(server, v.Tunnel.Bits()))
	fmt.Fprintf(&s, "ListenPort = %d\n", v.ListenPort)
	fmt.Fprintf(&s, "PrivateKey = %s\n", b.WireGuard.Server.Private)

	var arts []Artifact
	for _, p := range v.Peers {
		name, err := fileName("vpn peer", p.Name)
		if err != nil {
			return nil, err
		}
		if !p.Address.IsValid() {
			return nil, fmt.Errorf("vpn peer %s has no tunnel address", p.Name)
		}
		pub := p.PublicKey
		kp, generated := b.WireGuard.Peers[p.Name]
		if pub == "" {
			if !generated || kp.Public == "" {
				return nil, fmt.Errorf("vpn peer %s: the secrets bundle has no key for it", p.Name)
			}
			pub = kp.Public
		}
		fmt.Fprintf(&s, "\n# peer %s\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\n", p.Name, pub, netip.PrefixFrom(p.Address, 32))

		var c strings.Builder
		c.WriteString(header(lab, "WireGuard client config for peer "+p.Name))
		c.WriteString("# Split tunnel: only the admin network goes through the VPN.\n")
		c.WriteString("# Import it in the WireGuard app, or: wg-quick up ./" + name + ".conf\n")
		c.WriteString("[Interface]\n")
		secret := false
		if p.PublicKey == "" {
			fmt.Fprintf(&c, "PrivateKey = %s\n", kp.Private)
			secret = true
		} else {
			c.WriteString("# PrivateKey = <the private key of the public key you gave in lab.yaml>\n")
		}
		fmt.Fprintf(&c, "Address = %s\n", netip.PrefixFrom(p.Address, 32))
		if len(v.DNS) > 0 {
			dns := make([]string, len(v.DNS))
			for i, d := range v.DNS {
				dns[i] = d.String()
			}
			fmt.Fprintf(&c, "DNS = %s\n", strings.Join(dns, ", "))
		}
		fmt.Fprintf(&c, "\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s\nPersistentKeepalive = %d\n",
			b.WireGuard.Server.Public, v.Endpoint, admin.CIDR.Masked(), PersistentKeepalive)
		arts = append(arts, Artifact{Path: "wireguard/peers/" + name + ".conf", Data: []byte(c.String()), Secret: secret})
	}
	arts = append(arts, Artifact{Path: "wireguard/server.conf", Data: []byte(s.String()), Secret: true})
	return arts, nil
}

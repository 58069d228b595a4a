package secrets

import (
	"github.com/siderolabs/crypto/x509"
	talossecrets "github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
)

// Bundle is every secret the lab needs, created once and reused so that
// rendering is deterministic. It lives only encrypted in the state folder.
type Bundle struct {
	// Talos is the cluster's secrets bundle (CAs, tokens, etcd and
	// Kubernetes keys) in machinery's own type.
	Talos *talossecrets.Bundle `yaml:"talos" json:"talos"`
	// TalosAdmin is the admin client certificate and key of the talosconfig,
	// signed by the Talos API CA. Kept here so that the talosconfig renders
	// identically every time; renewed shortly before it expires.
	TalosAdmin *x509.PEMEncodedCertificateAndKey `yaml:"talosAdmin,omitempty" json:"talosAdmin,omitempty"`
	// WireGuard holds the VPN server's key and one key per peer that
	// homelab generated (peers that brought their own public key have none).
	WireGuard WireGuardKeys `yaml:"wireguard" json:"wireguard"`
}

// WireGuardKeys are the VPN's key pairs.
type WireGuardKeys struct {
	Server KeyPair `yaml:"server" json:"server"`
	// Peers maps a peer name to its key pair.
	Peers map[string]KeyPair `yaml:"peers,omitempty" json:"peers,omitempty"`
}

// KeyPair is a WireGuard key pair, base64 as wg(8) prints them.
type KeyPair struct {
	Private string `yaml:"private" json:"private"`
	Public  string `yaml:"public" json:"public"`
}

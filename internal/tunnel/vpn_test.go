package tunnel

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/vpn"
)

// TestOpensVPNClientConfig checks that what internal/vpn writes for a
// peer (the operator peer homelab dials through) is what Open takes.
func TestOpensVPNClientConfig(t *testing.T) {
	priv, pub, err := vpn.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, serverPub, err := vpn.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	lab := vpn.LabInfo{
		Tunnel: netip.MustParsePrefix("10.99.0.0/24"), Server: netip.MustParseAddr("10.99.0.1"),
		ServerPublicKey: serverPub, Endpoint: "127.0.0.1:9",
		Admin: netip.MustParsePrefix("10.10.1.0/24"), DNS: []netip.Addr{netip.MustParseAddr("10.10.1.1")},
	}
	p := vpn.StoredPeer{Name: "homelab", Address: netip.MustParseAddr("10.99.0.9"), PublicKey: pub, PrivateKey: priv, Created: time.Unix(0, 0)}
	text := vpn.ClientConfig(lab, p).Marshal("operator peer of homelab")
	c, err := vpn.Parse(text)
	if err != nil {
		t.Fatalf("vpn.Parse(vpn.ClientConfig().Marshal()) error: %v", err)
	}
	if c.Interface.PrivateKey != priv || len(c.Interface.Addresses) != 1 || c.Interface.Addresses[0] != netip.MustParsePrefix("10.99.0.9/32") {
		t.Errorf("interface = %v, want the peer's key and 10.99.0.9/32", c)
	}
	if len(c.Peers) != 1 {
		t.Fatalf("peers = %d, want 1", len(c.Peers))
	}
	sp := c.Peers[0]
	if sp.PublicKey != serverPub || sp.Endpoint != "127.0.0.1:9" || len(sp.AllowedIPs) != 1 || sp.AllowedIPs[0] != lab.Admin || sp.PersistentKeepalive != vpn.ClientKeepalive {
		t.Errorf("server peer = %+v, want the lab's server, endpoint, admin network and keepalive", sp)
	}
	// Open binds a local UDP socket and configures the device; the
	// keepalive sends a first handshake at once, so the endpoint is on
	// loopback (the discard port, where nothing answers): no packet
	// leaves the machine.
	tun, err := Open(context.Background(), c, Options{})
	if err != nil {
		t.Fatalf("Open(vpn client config) error: %v", err)
	}
	if err := tun.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

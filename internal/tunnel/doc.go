// Package tunnel carries homelab's own WireGuard client, in process: the
// wireguard-go device over a user-space network stack (gVisor's netstack),
// so no TUN device, no root and no OS VPN set-up are needed. A Tunnel is
// configured from a wg-quick file as internal/vpn parses it (vpn.Config)
// and dials TCP through the VPN with DialContext, which is what the Talos
// gRPC client and the Kubernetes HTTP client take.
//
// When the caller already sits on the admin network (the manager VM),
// Direct dials with the operating system's stack instead; Pick chooses
// between the two by trying a direct connection first.
package tunnel

// Package vpn owns the lab's WireGuard: the wg-quick style configs that
// render writes (a parser and a writer), a userspace WireGuard endpoint
// (wireguard-go on a TUN device) serving either the lab's server config
// or a peer's client config, and the extra peers that "homelab vpn peer
// add" keeps encrypted in the state folder.
//
// The daemon opens its UDP socket and TUN device in the network namespace
// of the process that runs it: the local provider starts "homelab vpn run"
// as its own process inside the VPN container's namespace, and nothing in
// this package opens a socket before Run.
package vpn

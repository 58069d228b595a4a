// Package firewall owns the lab's packet filter: a small, structured
// ruleset model (tables, chains, sets, rules from a closed vocabulary) that
// prints as nft(8) syntax and that a netlink loader can program without
// parsing text, and the policy of DESIGN.md turned into one ruleset per
// place that filters: the host, the load balancer container and the VPN
// container (Rulesets).
//
// # Interface names
//
// Rules match interfaces by name, so whoever builds the links must use
// these names exactly (the local provider and the Proxmox provider both do):
//
//   - On the host, each network is its bridge, named by the spec's
//     networks[].bridge (vmbr0, vmbr1, vmbr2 by default).
//   - Inside a guest, the interface attached to a network is named after
//     the network's name in the spec (wan, admin, apps by default), not
//     eth0/eth1: a rule that says "admin" means the leg on the admin network.
//   - The VPN container's WireGuard interface is TunnelInterface (wg0).
//   - Loopback is "lo".
//
// Each ruleset is one table of family inet named TableName(lab) (for
// example "homelab-lab"), so that a lab's tables are found and removed by
// name and two labs never share a table.
package firewall

import (
	"net/netip"
)

// TunnelInterface is the WireGuard interface in the VPN container.
const TunnelInterface = "wg0"

// Family is an nftables address family.
type Family string

// The families the lab uses.
const (
	FamilyInet Family = "inet"
	FamilyIP   Family = "ip"
)

// ChainType is the type of a base chain.
type ChainType string

// The chain types the lab uses.
const (
	TypeFilter ChainType = "filter"
	TypeNAT    ChainType = "nat"
)

// Hook is where a base chain is attached in the netfilter path.
type Hook string

// The hooks.
const (
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookOutput      Hook = "output"
	HookPostrouting Hook = "postrouting"
)

// Standard chain priorities (nft's named priorities).
const (
	PriorityFilter = 0
	PriorityDstNAT = -100
	PrioritySrcNAT = 100
)

// Verdict is what a rule or a chain's policy does with a packet.
type Verdict string

// The verdicts and terminal statements of the vocabulary.
const (
	Accept     Verdict = "accept"
	Drop       Verdict = "drop"
	Reject     Verdict = "reject"
	Masquerade Verdict = "masquerade"
	DNAT       Verdict = "dnat"
	Jump       Verdict = "jump"
	// Continue is a rule with no verdict (for example counter or log only).
	Continue Verdict = ""
)

// L4Proto is a transport protocol match.
type L4Proto string

// The protocols.
const (
	TCP  L4Proto = "tcp"
	UDP  L4Proto = "udp"
	ICMP L4Proto = "icmp"
)

// CTState is a conntrack state.
type CTState string

// The conntrack states.
const (
	CTEstablished CTState = "established"
	CTRelated     CTState = "related"
	CTNew         CTState = "new"
	CTInvalid     CTState = "invalid"
)

// Ruleset is what one place (host or container) loads: its tables.
type Ruleset struct {
	Tables []*Table
}

// Table is one nftables table with its sets and chains.
type Table struct {
	Family Family
	Name   string
	// Sets are named sets of IPv4 prefixes, printed before the chains.
	Sets   []*Set
	Chains []*Chain
}

// Set is a named set of IPv4 prefixes (type ipv4_addr, flags interval).
type Set struct {
	Name     string
	Elements []netip.Prefix
}

// Chain is a base chain when Hook is set, a regular chain (a jump target)
// otherwise.
type Chain struct {
	Name     string
	Type     ChainType
	Hook     Hook
	Priority int
	// Policy is Accept or Drop for base chains; ignored for regular chains.
	Policy Verdict
	Rules  []Rule
}

// Addr matches an IPv4 address against a prefix or a named set (the set
// wins when both are given). The zero value matches any address.
type Addr struct {
	Prefix netip.Prefix
	Set    string
}

// Any reports whether the match is empty.
func (a Addr) Any() bool { return a.Set == "" && !a.Prefix.IsValid() }

// Rule is one rule: all its matches must hold, then the optional counter
// and log statements run, then the verdict.
type Rule struct {
	IIfName string
	OIfName string
	SAddr   Addr
	DAddr   Addr
	// Proto restricts the transport protocol; DPorts needs TCP or UDP.
	Proto L4Proto
	// DPorts: one port or a set of ports.
	DPorts  []uint16
	CTState []CTState

	Counter bool
	// LogPrefix logs matching packets with this prefix when not empty.
	LogPrefix string

	Verdict Verdict
	// Target is the chain of a Jump.
	Target string
	// To is the destination of a DNAT (the port may be zero).
	To netip.AddrPort

	// Comment says why the rule exists (stored as the rule's user data).
	Comment string
}

// Table returns the table with the given name, or nil.
func (r *Ruleset) Table(name string) *Table {
	for _, t := range r.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Chain returns the chain with the given name, or nil.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Set returns the set with the given name, or nil.
func (t *Table) Set(name string) *Set {
	for _, s := range t.Sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

package firewall

import (
	"net/netip"
	"slices"
)

// Packet is what the evaluator needs to know about a packet: enough to
// answer "does this ruleset let it through" in tests and in verify's
// expected matrix, without a kernel.
type Packet struct {
	IIf, OIf string
	Src, Dst netip.Addr
	Proto    L4Proto
	DPort    uint16
	// CT is the packet's conntrack state (default new).
	CT CTState
}

// Eval runs the packet through the filter chains of the table attached to
// hook, in priority order, the way netfilter does: a drop or reject in any
// chain is final, an accept ends only its own chain. It returns Accept or
// Drop (reject counts as drop). A hook without filter chains accepts.
func (t *Table) Eval(hook Hook, p Packet) Verdict {
	if p.CT == "" {
		p.CT = CTNew
	}
	var chains []*Chain
	for _, c := range t.Chains {
		if c.Hook == hook && c.Type == TypeFilter {
			chains = append(chains, c)
		}
	}
	slices.SortStableFunc(chains, func(a, b *Chain) int { return a.Priority - b.Priority })
	for _, c := range chains {
		if v := t.evalChain(c, p, 0); v == Drop || v == Reject {
			return Drop
		}
	}
	return Accept
}

// Masquerades reports whether the table's nat postrouting chains
// masquerade the packet.
func (t *Table) Masquerades(p Packet) bool {
	if p.CT == "" {
		p.CT = CTNew
	}
	for _, c := range t.Chains {
		if c.Hook == HookPostrouting && c.Type == TypeNAT && t.evalChain(c, p, 0) == Masquerade {
			return true
		}
	}
	return false
}

func (t *Table) evalChain(c *Chain, p Packet, depth int) Verdict {
	if depth > 16 {
		return Drop // a jump loop; the kernel refuses it at load time
	}
	for _, r := range c.Rules {
		if !t.matches(r, p) {
			continue
		}
		switch r.Verdict {
		case Continue:
			continue
		case Jump:
			if target := t.Chain(r.Target); target != nil {
				if v := t.evalChain(target, p, depth+1); v != Continue {
					return v
				}
			}
			continue
		default:
			return r.Verdict
		}
	}
	if c.Hook == "" {
		return Continue
	}
	return c.policy()
}

func (t *Table) matches(r Rule, p Packet) bool {
	if r.IIfName != "" && r.IIfName != p.IIf {
		return false
	}
	if r.OIfName != "" && r.OIfName != p.OIf {
		return false
	}
	if !t.addrMatches(r.SAddr, p.Src) || !t.addrMatches(r.DAddr, p.Dst) {
		return false
	}
	if r.Proto != "" && r.Proto != p.Proto {
		return false
	}
	if len(r.DPorts) > 0 && !slices.Contains(r.DPorts, p.DPort) {
		return false
	}
	if len(r.CTState) > 0 && !slices.Contains(r.CTState, p.CT) {
		return false
	}
	return true
}

func (t *Table) addrMatches(a Addr, ip netip.Addr) bool {
	if a.Set != "" {
		s := t.Set(a.Set)
		if s == nil {
			return false
		}
		for _, e := range s.Elements {
			if e.Contains(ip) {
				return true
			}
		}
		return false
	}
	if a.Prefix.IsValid() {
		return a.Prefix.Contains(ip)
	}
	return true
}

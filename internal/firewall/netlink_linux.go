package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// This file programs the model into the kernel over netlink, without nft(8):
// each rule becomes the same expressions nft would generate for the text
// that Text prints, so that "nft list ruleset" shows the rules Text shows.

// Conn opens an nftables netlink connection to the network namespace
// behind the file descriptor nsFd, or to the caller's namespace when nsFd
// is negative. The descriptor is only used while dialing each request.
func Conn(nsFd int) (*nftables.Conn, error) {
	if nsFd < 0 {
		return nftables.New()
	}
	return nftables.New(nftables.WithNetNSFd(nsFd))
}

// Load replaces the ruleset's tables atomically in the namespace of c: in
// one netlink transaction each table is created if missing, deleted, and
// declared again with its sets, chains and rules. Loading twice gives the
// same state; a failure leaves the previous tables untouched.
func (r *Ruleset) Load(c *nftables.Conn) error {
	if err := r.Check(); err != nil {
		return fmt.Errorf("loading the ruleset: %w", err)
	}
	for _, t := range r.Tables {
		if err := t.queue(c); err != nil {
			return fmt.Errorf("loading table %s %s: %w", t.Family, t.Name, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("loading the ruleset: %w", err)
	}
	return nil
}

// DeleteTable removes the table if it exists. It reports whether there was
// one.
func DeleteTable(c *nftables.Conn, family Family, name string) (bool, error) {
	tables, err := c.ListTablesOfFamily(tableFamily(family))
	if err != nil {
		return false, fmt.Errorf("listing nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == name {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return false, fmt.Errorf("deleting table %s %s: %w", family, name, err)
			}
			return true, nil
		}
	}
	return false, nil
}

// TableInfo is what Tables lists about one table in the kernel.
type TableInfo struct {
	Family Family
	Name   string
	// Rules counts the rules of each chain, by chain name.
	Rules map[string]int
	// Comments are the rules' comments in chain order, by chain name.
	Comments map[string][]string
}

// Tables lists the inet and ip tables in the namespace of c, with their
// chains' rule counts and comments: enough to check that what the kernel
// holds is what Load programmed.
func Tables(c *nftables.Conn) ([]TableInfo, error) {
	var out []TableInfo
	for _, fam := range []Family{FamilyInet, FamilyIP} {
		tables, err := c.ListTablesOfFamily(tableFamily(fam))
		if err != nil {
			return nil, fmt.Errorf("listing nftables tables: %w", err)
		}
		chains, err := c.ListChainsOfTableFamily(tableFamily(fam))
		if err != nil {
			return nil, fmt.Errorf("listing nftables chains: %w", err)
		}
		for _, t := range tables {
			ti := TableInfo{Family: fam, Name: t.Name, Rules: map[string]int{}, Comments: map[string][]string{}}
			for _, ch := range chains {
				if ch.Table.Name != t.Name {
					continue
				}
				rules, err := c.GetRules(t, ch)
				if err != nil {
					return nil, fmt.Errorf("listing rules of %s/%s: %w", t.Name, ch.Name, err)
				}
				ti.Rules[ch.Name] = len(rules)
				for _, r := range rules {
					s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
					ti.Comments[ch.Name] = append(ti.Comments[ch.Name], s)
				}
			}
			out = append(out, ti)
		}
	}
	return out, nil
}

func tableFamily(f Family) nftables.TableFamily {
	if f == FamilyIP {
		return nftables.TableFamilyIPv4
	}
	return nftables.TableFamilyINet
}

var hooks = map[Hook]*nftables.ChainHook{
	HookPrerouting:  nftables.ChainHookPrerouting,
	HookInput:       nftables.ChainHookInput,
	HookForward:     nftables.ChainHookForward,
	HookOutput:      nftables.ChainHookOutput,
	HookPostrouting: nftables.ChainHookPostrouting,
}

func (t *Table) queue(c *nftables.Conn) error {
	nt := &nftables.Table{Family: tableFamily(t.Family), Name: t.Name}
	c.AddTable(nt)
	c.DelTable(nt)
	c.AddTable(nt)

	sets := map[string]*nftables.Set{}
	for _, s := range t.Sets {
		ns := &nftables.Set{Table: nt, ID: nextSetID(), Name: s.Name, KeyType: nftables.TypeIPAddr, Interval: true}
		if err := c.AddSet(ns, intervalElements(s.Elements)); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		sets[s.Name] = ns
	}
	for _, ch := range t.Chains {
		nc := &nftables.Chain{Name: ch.Name, Table: nt}
		if ch.Hook != "" {
			hook, ok := hooks[ch.Hook]
			if !ok {
				return fmt.Errorf("chain %s: unknown hook %q", ch.Name, ch.Hook)
			}
			nc.Hooknum = hook
			nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority))
			nc.Type = nftables.ChainTypeFilter
			if ch.Type == TypeNAT {
				nc.Type = nftables.ChainTypeNAT
			}
			policy := nftables.ChainPolicyAccept
			if ch.policy() == Drop {
				policy = nftables.ChainPolicyDrop
			}
			nc.Policy = &policy
		}
		c.AddChain(nc)
	}
	for _, ch := range t.Chains {
		nc := &nftables.Chain{Name: ch.Name, Table: nt}
		for i, r := range ch.Rules {
			exprs, err := r.exprs(c, nt, sets)
			if err != nil {
				return fmt.Errorf("chain %s: rule %d: %w", ch.Name, i+1, err)
			}
			rule := &nftables.Rule{Table: nt, Chain: nc, Exprs: exprs}
			if r.Comment != "" {
				rule.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
			}
			c.AddRule(rule)
		}
	}
	return nil
}

// intervalElements encodes prefixes the way nft does for an interval set:
// each prefix is [start, end+1) with a leading interval end at 0.0.0.0
// when the first range does not start there.
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	sorted := slices.Clone(ps)
	slices.SortFunc(sorted, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	var out []nftables.SetElement
	if len(sorted) > 0 && sorted[0].Masked().Addr() != netip.IPv4Unspecified() {
		out = append(out, nftables.SetElement{Key: netip.IPv4Unspecified().AsSlice(), IntervalEnd: true})
	}
	for _, p := range sorted {
		p = p.Masked()
		start := p.Addr().As4()
		end := binary.BigEndian.Uint32(start[:]) | (1<<(32-p.Bits()) - 1)
		out = append(out, nftables.SetElement{Key: start[:]})
		if end != 0xffffffff {
			out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, end+1), IntervalEnd: true})
		}
	}
	return out
}

// setIDs numbers sets within a transaction. google/nftables hands out IDs
// from an unguarded global when ID is zero, which races when several
// rulesets load at once; giving every set an ID here avoids it.
var setIDs atomic.Uint32

func nextSetID() uint32 { return setIDs.Add(1) }

// ifname pads an interface name the way the kernel stores it.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

var l4protos = map[L4Proto]byte{TCP: unix.IPPROTO_TCP, UDP: unix.IPPROTO_UDP, ICMP: unix.IPPROTO_ICMP}

var ctBits = map[CTState]uint32{
	CTEstablished: expr.CtStateBitESTABLISHED,
	CTRelated:     expr.CtStateBitRELATED,
	CTNew:         expr.CtStateBitNEW,
	CTInvalid:     expr.CtStateBitINVALID,
}

// exprs translates one rule into netlink expressions, in the order nft
// would evaluate the text form.
func (r Rule) exprs(c *nftables.Conn, t *nftables.Table, sets map[string]*nftables.Set) ([]expr.Any, error) {
	var out []expr.Any
	cmp := func(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	if r.IIfName != "" {
		out = append(out, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, cmp(ifname(r.IIfName)))
	}
	if r.OIfName != "" {
		out = append(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, cmp(ifname(r.OIfName)))
	}
	needsIPv4 := !r.SAddr.Any() || !r.DAddr.Any() || r.Verdict == DNAT
	if needsIPv4 && t.Family == nftables.TableFamilyINet {
		out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp([]byte{unix.NFPROTO_IPV4}))
	}
	for _, m := range []struct {
		a      Addr
		offset uint32
	}{{r.SAddr, 12}, {r.DAddr, 16}} {
		if m.a.Any() {
			continue
		}
		load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: m.offset, Len: 4}
		if m.a.Set != "" {
			s, ok := sets[m.a.Set]
			if !ok {
				return nil, fmt.Errorf("unknown set %q", m.a.Set)
			}
			out = append(out, load, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
			continue
		}
		p := m.a.Prefix.Masked()
		addr := p.Addr().AsSlice()
		switch {
		case p.Bits() == 0:
			// matches every IPv4 address: nothing beyond the family check
		case p.Bits() == 32:
			out = append(out, load, cmp(addr))
		default:
			mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
			out = append(out, load,
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
				cmp(addr))
		}
	}
	if r.Proto != "" {
		proto, ok := l4protos[r.Proto]
		if !ok {
			return nil, fmt.Errorf("unknown protocol %q", r.Proto)
		}
		out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp([]byte{proto}))
	}
	switch len(r.DPorts) {
	case 0:
	case 1:
		out = append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			cmp(binaryutil.BigEndian.PutUint16(r.DPorts[0])))
	default:
		s := &nftables.Set{Table: t, ID: nextSetID(), Name: "__set%d", Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
		elems := make([]nftables.SetElement, len(r.DPorts))
		for i, p := range r.DPorts {
			elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
		}
		if err := c.AddSet(s, elems); err != nil {
			return nil, fmt.Errorf("port set: %w", err)
		}
		out = append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	}
	if len(r.CTState) > 0 {
		var bits uint32
		for _, s := range r.CTState {
			b, ok := ctBits[s]
			if !ok {
				return nil, fmt.Errorf("unknown conntrack state %q", s)
			}
			bits |= b
		}
		out = append(out,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	}
	if r.Counter {
		out = append(out, &expr.Counter{})
	}
	if r.LogPrefix != "" {
		out = append(out, &expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(r.LogPrefix)})
	}
	switch r.Verdict {
	case Continue:
	case Accept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case Drop:
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case Reject:
		out = append(out, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
	case Jump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.Target})
	case Masquerade:
		out = append(out, &expr.Masq{})
	case DNAT:
		to := r.To.Addr().As4()
		out = append(out, &expr.Immediate{Register: 1, Data: to[:]})
		nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}
		if r.To.Port() != 0 {
			out = append(out, &expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(r.To.Port())})
			nat.RegProtoMin = 2
		}
		out = append(out, nat)
	default:
		return nil, fmt.Errorf("unknown verdict %q", r.Verdict)
	}
	return out, nil
}

package firewall

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRuleText(t *testing.T) {
	tests := []struct {
		r    Rule
		f    Family
		want string
	}{
		{Rule{CTState: []CTState{CTEstablished, CTRelated}, Verdict: Accept}, FamilyInet, "ct state established,related accept"},
		{Rule{IIfName: "wan", Proto: UDP, DPorts: []uint16{51820}, Verdict: Accept}, FamilyInet, `iifname "wan" udp dport 51820 accept`},
		{Rule{OIfName: "admin", DAddr: Addr{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, Proto: TCP, DPorts: []uint16{22, 6443}, Verdict: Accept},
			FamilyInet, `oifname "admin" ip daddr 10.0.0.0/8 tcp dport { 22, 6443 } accept`},
		{Rule{SAddr: Addr{Set: "egress"}, Verdict: Masquerade, Comment: "nat"}, FamilyInet, `ip saddr @egress masquerade comment "nat"`},
		{Rule{SAddr: Addr{Prefix: netip.MustParsePrefix("10.1.2.3/32")}, Proto: ICMP, Verdict: Drop}, FamilyInet, "ip saddr 10.1.2.3 meta l4proto icmp drop"},
		{Rule{Counter: true, LogPrefix: "deny: ", Verdict: Reject}, FamilyInet, `counter log prefix "deny: " reject`},
		{Rule{Proto: TCP, DPorts: []uint16{80}, Verdict: DNAT, To: netip.MustParseAddrPort("10.0.0.5:8080")}, FamilyInet, "tcp dport 80 dnat ip to 10.0.0.5:8080"},
		{Rule{Proto: TCP, DPorts: []uint16{80}, Verdict: DNAT, To: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.5"), 0)}, FamilyIP, "tcp dport 80 dnat to 10.0.0.5"},
		{Rule{Verdict: Jump, Target: "peers"}, FamilyInet, "jump peers"},
		{Rule{Counter: true}, FamilyInet, "counter"},
	}
	for _, tt := range tests {
		if got := tt.r.text(tt.f); got != tt.want {
			t.Errorf("Rule%+v.text(%s) = %q, want %q", tt.r, tt.f, got, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	good := func() *Table {
		return &Table{Family: FamilyInet, Name: "t", Sets: []*Set{{Name: "s", Elements: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}},
			Chains: []*Chain{{Name: "input", Type: TypeFilter, Hook: HookInput, Policy: Drop}, {Name: "sub"}}}
	}
	tests := []struct {
		name   string
		mutate func(*Table)
		want   string
	}{
		{"valid", func(*Table) {}, ""},
		{"family", func(t *Table) { t.Family = "bridge" }, `unknown family "bridge"`},
		{"table name", func(t *Table) { t.Name = "1bad" }, "not an nft identifier"},
		{"unmasked element", func(t *Table) { t.Sets[0].Elements[0] = netip.MustParsePrefix("10.0.0.1/8") }, "not a masked IPv4 prefix"},
		{"unknown set", func(t *Table) { t.Chains[0].Rules = []Rule{{SAddr: Addr{Set: "nope"}, Verdict: Accept}} }, `unknown set "nope"`},
		{"ports without proto", func(t *Table) { t.Chains[0].Rules = []Rule{{DPorts: []uint16{1}, Verdict: Accept}} }, "ports need protocol"},
		{"masquerade in filter", func(t *Table) { t.Chains[0].Rules = []Rule{{Verdict: Masquerade}} }, "needs a nat chain"},
		{"jump target", func(t *Table) { t.Chains[0].Rules = []Rule{{Verdict: Jump, Target: "elsewhere"}} }, `unknown chain "elsewhere"`},
		{"policy", func(t *Table) { t.Chains[0].Policy = Reject }, "policy must be accept or drop"},
		{"quote", func(t *Table) { t.Chains[0].Rules = []Rule{{IIfName: `x"y`, Verdict: Accept}} }, "may not hold quotes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := good()
			tt.mutate(tab)
			err := (&Ruleset{Tables: []*Table{tab}}).Check()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Check() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestEvalJump(t *testing.T) {
	tab := &Table{Family: FamilyInet, Name: "t", Chains: []*Chain{
		{Name: "input", Type: TypeFilter, Hook: HookInput, Policy: Drop, Rules: []Rule{
			{IIfName: "wan", Verdict: Jump, Target: "wan_in"},
			{Proto: ICMP, Verdict: Accept},
		}},
		{Name: "wan_in", Rules: []Rule{{Proto: TCP, DPorts: []uint16{443}, Verdict: Accept}, {Proto: TCP, DPorts: []uint16{22}, Verdict: Reject}}},
	}}
	tests := []struct {
		p    Packet
		want Verdict
	}{
		{Packet{IIf: "wan", Proto: TCP, DPort: 443}, Accept},
		{Packet{IIf: "wan", Proto: TCP, DPort: 22}, Drop},
		{Packet{IIf: "wan", Proto: ICMP}, Accept}, // returns from wan_in, then matches icmp
		{Packet{IIf: "wan", Proto: UDP, DPort: 53}, Drop},
	}
	for _, tt := range tests {
		if got := tab.Eval(HookInput, tt.p); got != tt.want {
			t.Errorf("Eval(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

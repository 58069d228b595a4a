package firewall

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Text prints the ruleset as an nft(8) script that replaces the ruleset's
// tables atomically: "nft -f" of it creates each table if missing, deletes
// it, and declares it again, so loading twice gives the same state. The
// output is deterministic: it follows the order of the model.
func (r *Ruleset) Text() string {
	var b strings.Builder
	for i, t := range r.Tables {
		if i > 0 {
			b.WriteString("\n")
		}
		t.text(&b)
	}
	return b.String()
}

func (t *Table) text(b *strings.Builder) {
	fmt.Fprintf(b, "table %s %s\n", t.Family, t.Name)
	fmt.Fprintf(b, "delete table %s %s\n", t.Family, t.Name)
	fmt.Fprintf(b, "table %s %s {\n", t.Family, t.Name)
	for i, s := range t.Sets {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "\tset %s {\n\t\ttype ipv4_addr\n\t\tflags interval\n", s.Name)
		if len(s.Elements) > 0 {
			elems := make([]string, len(s.Elements))
			for j, p := range s.Elements {
				elems[j] = prefixText(p.String(), p.Bits())
			}
			fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
		}
		b.WriteString("\t}\n")
	}
	for i, c := range t.Chains {
		if i > 0 || len(t.Sets) > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "\tchain %s {\n", c.Name)
		if c.Hook != "" {
			fmt.Fprintf(b, "\t\ttype %s hook %s priority %d; policy %s;\n", c.Type, c.Hook, c.Priority, c.policy())
		}
		for _, r := range c.Rules {
			fmt.Fprintf(b, "\t\t%s\n", r.text(t.Family))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
}

func (c *Chain) policy() Verdict {
	if c.Policy == "" {
		return Accept
	}
	return c.Policy
}

// prefixText writes a /32 as a bare address.
func prefixText(s string, bits int) string {
	if bits == 32 {
		return s[:strings.IndexByte(s, '/')]
	}
	return s
}

func (a Addr) text() string {
	if a.Set != "" {
		return "@" + a.Set
	}
	return prefixText(a.Prefix.String(), a.Prefix.Bits())
}

// Text prints the rule in nft syntax for a table of the given family.
func (r Rule) text(f Family) string {
	var parts []string
	if r.IIfName != "" {
		parts = append(parts, "iifname "+strconv.Quote(r.IIfName))
	}
	if r.OIfName != "" {
		parts = append(parts, "oifname "+strconv.Quote(r.OIfName))
	}
	if !r.SAddr.Any() {
		parts = append(parts, "ip saddr "+r.SAddr.text())
	}
	if !r.DAddr.Any() {
		parts = append(parts, "ip daddr "+r.DAddr.text())
	}
	switch {
	case len(r.DPorts) == 1:
		parts = append(parts, fmt.Sprintf("%s dport %d", r.Proto, r.DPorts[0]))
	case len(r.DPorts) > 1:
		ps := make([]string, len(r.DPorts))
		for i, p := range r.DPorts {
			ps[i] = strconv.Itoa(int(p))
		}
		parts = append(parts, fmt.Sprintf("%s dport { %s }", r.Proto, strings.Join(ps, ", ")))
	case r.Proto != "":
		parts = append(parts, "meta l4proto "+string(r.Proto))
	}
	if len(r.CTState) > 0 {
		ss := make([]string, len(r.CTState))
		for i, s := range r.CTState {
			ss[i] = string(s)
		}
		parts = append(parts, "ct state "+strings.Join(ss, ","))
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	if r.LogPrefix != "" {
		parts = append(parts, "log prefix "+strconv.Quote(r.LogPrefix))
	}
	switch r.Verdict {
	case Continue:
	case Jump:
		parts = append(parts, "jump "+r.Target)
	case DNAT:
		to := r.To.Addr().String()
		if r.To.Port() != 0 {
			to = r.To.String()
		}
		if f == FamilyInet {
			parts = append(parts, "dnat ip to "+to)
		} else {
			parts = append(parts, "dnat to "+to)
		}
	default:
		parts = append(parts, string(r.Verdict))
	}
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

var identRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]{0,63}$`)

// Check reports what in the model nft or the kernel would refuse: bad
// names, unknown sets or jump targets, ports without a port protocol,
// verdicts in the wrong chain type. All problems are reported at once.
func (r *Ruleset) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, t := range r.Tables {
		if t.Family != FamilyInet && t.Family != FamilyIP {
			bad("table %q: unknown family %q", t.Name, t.Family)
		}
		if !identRE.MatchString(t.Name) {
			bad("table %q: name is not an nft identifier", t.Name)
		}
		for _, s := range t.Sets {
			if !identRE.MatchString(s.Name) {
				bad("table %s: set %q: name is not an nft identifier", t.Name, s.Name)
			}
			for _, p := range s.Elements {
				if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
					bad("table %s: set %s: element %v is not a masked IPv4 prefix", t.Name, s.Name, p)
				}
			}
		}
		for _, c := range t.Chains {
			where := fmt.Sprintf("table %s: chain %s", t.Name, c.Name)
			if !identRE.MatchString(c.Name) {
				bad("%s: name is not an nft identifier", where)
			}
			if c.Hook != "" {
				if c.Type != TypeFilter && c.Type != TypeNAT {
					bad("%s: unknown type %q", where, c.Type)
				}
				if p := c.policy(); p != Accept && p != Drop {
					bad("%s: policy must be accept or drop, not %q", where, p)
				}
			}
			for i, rule := range c.Rules {
				rw := fmt.Sprintf("%s: rule %d", where, i+1)
				for _, a := range []Addr{rule.SAddr, rule.DAddr} {
					if a.Set != "" && t.Set(a.Set) == nil {
						bad("%s: unknown set %q", rw, a.Set)
					}
					if a.Set == "" && a.Prefix.IsValid() && (!a.Prefix.Addr().Is4() || a.Prefix.Masked() != a.Prefix) {
						bad("%s: %v is not a masked IPv4 prefix", rw, a.Prefix)
					}
				}
				if len(rule.DPorts) > 0 && rule.Proto != TCP && rule.Proto != UDP {
					bad("%s: ports need protocol tcp or udp, not %q", rw, rule.Proto)
				}
				switch rule.Proto {
				case "", TCP, UDP, ICMP:
				default:
					bad("%s: unknown protocol %q", rw, rule.Proto)
				}
				switch rule.Verdict {
				case Continue, Accept, Drop, Reject:
				case Masquerade, DNAT:
					if c.Type != TypeNAT {
						bad("%s: %s needs a nat chain", rw, rule.Verdict)
					}
					if rule.Verdict == DNAT && !rule.To.Addr().Is4() {
						bad("%s: dnat needs an IPv4 destination", rw)
					}
				case Jump:
					if t.Chain(rule.Target) == nil {
						bad("%s: jump to unknown chain %q", rw, rule.Target)
					}
				default:
					bad("%s: unknown verdict %q", rw, rule.Verdict)
				}
				if strings.ContainsAny(rule.LogPrefix+rule.Comment+rule.IIfName+rule.OIfName, "\"\\\n") {
					bad("%s: names, log prefix and comment may not hold quotes, backslashes or newlines", rw)
				}
			}
		}
	}
	return errors.Join(errs...)
}

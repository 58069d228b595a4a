package pvesim

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ruleSkip lists parameters that address a rule rather than describe it.
var ruleSkip = map[string]bool{"node": true, "vmid": true, "group": true, "pos": true, "digest": true, "delete": true, "moveto": true}

// intFields are rule and option fields PVE answers as integers.
var intFields = map[string]bool{"enable": true, "pos": true, "nomatch": true, "dhcp": true, "ipfilter": true,
	"macfilter": true, "ndp": true, "radv": true, "ebtables": true}

func rulesDigest(rules []map[string]string) string {
	m := map[string]string{}
	for i, r := range rules {
		for k, v := range r {
			m[strconv.Itoa(i)+"."+k] = v
		}
	}
	return digest(m)
}

func renderFlat(m map[string]string, extra map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if intFields[k] {
			if n, err := strconv.Atoi(v); err == nil {
				out[k] = n
				continue
			}
			out[k] = b2i(trueRE.MatchString(v))
			continue
		}
		out[k] = v
	}
	maps.Copy(out, extra)
	return out
}

// A rules resolver finds the rule list a request addresses.
type fwResolver func(s *Sim, r *req) (*FirewallConf, error)

func (s *Sim) groupConf(r *req) (*FirewallConf, error) {
	g := s.st.Groups[r.str("group")]
	if g == nil {
		return nil, errf(500, "no such security group '%s'", r.str("group"))
	}
	return g, nil
}

func guestFW(typ string) fwResolver {
	return func(s *Sim, r *req) (*FirewallConf, error) {
		g, err := s.guest(r, typ)
		if err != nil {
			return nil, err
		}
		return &g.Firewall, nil
	}
}

func rulePos(r *req, fw *FirewallConf) (int, error) {
	pos := r.int("pos")
	if !r.has("pos") || pos < 0 || pos >= len(fw.Rules) {
		return 0, errf(500, "no rule at position %s", r.str("pos"))
	}
	return pos, nil
}

func (s *Sim) checkRule(rule map[string]string) error {
	if rule["type"] == "group" && s.st.Groups[rule["action"]] == nil {
		return errf(500, "security group '%s' does not exist", rule["action"])
	}
	return nil
}

func registerRules(base string, resolve fwResolver) {
	handle("GET "+base, func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		d := rulesDigest(fw.Rules)
		out := []map[string]any{}
		for i, rule := range fw.Rules {
			out = append(out, renderFlat(rule, map[string]any{"pos": i, "digest": d}))
		}
		return out, nil
	})
	handle("POST "+base, func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		if r.has("digest") && r.str("digest") != rulesDigest(fw.Rules) {
			return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
		}
		rule := map[string]string{}
		for k := range r.params {
			if !ruleSkip[k] {
				rule[k] = r.str(k)
			}
		}
		if err := s.checkRule(rule); err != nil {
			return nil, err
		}
		pos := min(r.intOr("pos", 0), len(fw.Rules)) // PVE inserts at the top by default
		fw.Rules = slices.Insert(fw.Rules, pos, rule)
		return nil, nil
	})
	handle("GET "+base+"/{pos}", func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		pos, err := rulePos(r, fw)
		if err != nil {
			return nil, err
		}
		return renderFlat(fw.Rules[pos], map[string]any{"pos": pos}), nil
	})
	handle("PUT "+base+"/{pos}", func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		if r.has("digest") && r.str("digest") != rulesDigest(fw.Rules) {
			return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
		}
		pos, err := rulePos(r, fw)
		if err != nil {
			return nil, err
		}
		if r.has("moveto") {
			rule := fw.Rules[pos]
			fw.Rules = slices.Delete(fw.Rules, pos, pos+1)
			to := min(r.int("moveto"), len(fw.Rules))
			fw.Rules = slices.Insert(fw.Rules, to, rule)
			return nil, nil
		}
		rule := maps.Clone(fw.Rules[pos])
		for _, k := range splitRE.Split(r.str("delete"), -1) {
			delete(rule, k)
		}
		for k := range r.params {
			if !ruleSkip[k] {
				rule[k] = r.str(k)
			}
		}
		if err := s.checkRule(rule); err != nil {
			return nil, err
		}
		fw.Rules[pos] = rule
		return nil, nil
	})
	handle("DELETE "+base+"/{pos}", func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		if r.has("digest") && r.str("digest") != rulesDigest(fw.Rules) {
			return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
		}
		pos, err := rulePos(r, fw)
		if err != nil {
			return nil, err
		}
		fw.Rules = slices.Delete(fw.Rules, pos, pos+1)
		return nil, nil
	})
}

func registerOptions(p string, resolve fwResolver) {
	handle("GET "+p, func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		return renderFlat(fw.Options, map[string]any{"digest": digest(fw.Options)}), nil
	})
	handle("PUT "+p, func(s *Sim, r *req) (any, error) {
		fw, err := resolve(s, r)
		if err != nil {
			return nil, err
		}
		if r.has("digest") && r.str("digest") != digest(fw.Options) {
			return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
		}
		if fw.Options == nil {
			fw.Options = map[string]string{}
		}
		for _, k := range splitRE.Split(r.str("delete"), -1) {
			delete(fw.Options, k)
		}
		for k := range r.params {
			if !ruleSkip[k] {
				fw.Options[k] = r.str(k)
			}
		}
		return nil, nil
	})
}

func ipVersion(cidr string) int {
	s, _, _ := strings.Cut(cidr, "/")
	if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
		return 6
	}
	return 4
}

func init() {
	cluster := func(s *Sim, r *req) (*FirewallConf, error) { return &s.st.ClusterFW, nil }
	registerRules("/cluster/firewall/rules", cluster)
	registerOptions("/cluster/firewall/options", cluster)
	registerRules("/cluster/firewall/groups/{group}", (*Sim).groupConf)
	for _, typ := range []string{"qemu", "lxc"} {
		registerRules("/nodes/{node}/"+typ+"/{vmid}/firewall/rules", guestFW(typ))
		registerOptions("/nodes/{node}/"+typ+"/{vmid}/firewall/options", guestFW(typ))
	}

	handle("GET /cluster/firewall/groups", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		for _, name := range slices.Sorted(maps.Keys(s.st.Groups)) {
			g := s.st.Groups[name]
			e := map[string]any{"group": name, "digest": rulesDigest(g.Rules)}
			if g.Comment != "" {
				e["comment"] = g.Comment
			}
			out = append(out, e)
		}
		return out, nil
	})
	handle("POST /cluster/firewall/groups", func(s *Sim, r *req) (any, error) {
		name := r.str("group")
		if old := r.str("rename"); old != "" {
			g := s.st.Groups[old]
			if g == nil {
				return nil, errf(500, "no such security group '%s'", old)
			}
			if old != name && s.st.Groups[name] != nil {
				return nil, errf(500, "security group '%s' already exists", name)
			}
			delete(s.st.Groups, old)
			if r.has("comment") {
				g.Comment = r.str("comment")
			}
			s.st.Groups[name] = g
			return nil, nil
		}
		if s.st.Groups[name] != nil {
			return nil, errf(500, "security group '%s' already exists", name)
		}
		s.st.Groups[name] = &FirewallConf{Comment: r.str("comment")}
		return nil, nil
	})
	handle("DELETE /cluster/firewall/groups/{group}", func(s *Sim, r *req) (any, error) {
		g, err := s.groupConf(r)
		if err != nil {
			return nil, err
		}
		if len(g.Rules) > 0 {
			return nil, errf(500, "security group '%s' is not empty", r.str("group"))
		}
		delete(s.st.Groups, r.str("group"))
		return nil, nil
	})

	ipset := func(s *Sim, r *req) (*IPSet, error) {
		set := s.st.IPSets[r.str("name")]
		if set == nil {
			return nil, errf(500, "no such IPSet '%s'", r.str("name"))
		}
		return set, nil
	}
	handle("GET /cluster/firewall/ipset", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		for _, name := range slices.Sorted(maps.Keys(s.st.IPSets)) {
			set := s.st.IPSets[name]
			e := map[string]any{"name": name, "digest": rulesDigest(set.Entries)}
			if set.Comment != "" {
				e["comment"] = set.Comment
			}
			out = append(out, e)
		}
		return out, nil
	})
	handle("POST /cluster/firewall/ipset", func(s *Sim, r *req) (any, error) {
		name := r.str("name")
		if old := r.str("rename"); old != "" {
			set := s.st.IPSets[old]
			if set == nil {
				return nil, errf(500, "no such IPSet '%s'", old)
			}
			if old != name && s.st.IPSets[name] != nil {
				return nil, errf(500, "IPSet '%s' already exists", name)
			}
			delete(s.st.IPSets, old)
			if r.has("comment") {
				set.Comment = r.str("comment")
			}
			s.st.IPSets[name] = set
			return nil, nil
		}
		if s.st.IPSets[name] != nil {
			return nil, errf(500, "IPSet '%s' already exists", name)
		}
		s.st.IPSets[name] = &IPSet{Comment: r.str("comment")}
		return nil, nil
	})
	handle("GET /cluster/firewall/ipset/{name}", func(s *Sim, r *req) (any, error) {
		set, err := ipset(s, r)
		if err != nil {
			return nil, err
		}
		d := rulesDigest(set.Entries)
		out := []map[string]any{}
		for _, e := range set.Entries {
			out = append(out, renderFlat(e, map[string]any{"digest": d}))
		}
		return out, nil
	})
	handle("POST /cluster/firewall/ipset/{name}", func(s *Sim, r *req) (any, error) {
		set, err := ipset(s, r)
		if err != nil {
			return nil, err
		}
		cidr := r.str("cidr")
		for _, e := range set.Entries {
			if e["cidr"] == cidr {
				return nil, errf(500, "entry '%s' already exists", cidr)
			}
		}
		e := map[string]string{"cidr": cidr}
		if r.has("comment") {
			e["comment"] = r.str("comment")
		}
		if r.has("nomatch") {
			e["nomatch"] = itoa(b2i(r.bool("nomatch")))
		}
		set.Entries = append(set.Entries, e)
		return nil, nil
	})
	handle("DELETE /cluster/firewall/ipset/{name}", func(s *Sim, r *req) (any, error) {
		set, err := ipset(s, r)
		if err != nil {
			return nil, err
		}
		if len(set.Entries) > 0 && !r.bool("force") {
			return nil, errf(500, "IPSet '%s' is not empty", r.str("name"))
		}
		delete(s.st.IPSets, r.str("name"))
		return nil, nil
	})
	entry := func(s *Sim, r *req) (*IPSet, int, error) {
		set, err := ipset(s, r)
		if err != nil {
			return nil, 0, err
		}
		for i, e := range set.Entries {
			if e["cidr"] == r.str("cidr") {
				return set, i, nil
			}
		}
		return nil, 0, errf(500, "no such IP/Network")
	}
	handle("GET /cluster/firewall/ipset/{name}/{cidr}", func(s *Sim, r *req) (any, error) {
		set, i, err := entry(s, r)
		if err != nil {
			return nil, err
		}
		return renderFlat(set.Entries[i], nil), nil
	})
	handle("PUT /cluster/firewall/ipset/{name}/{cidr}", func(s *Sim, r *req) (any, error) {
		set, i, err := entry(s, r)
		if err != nil {
			return nil, err
		}
		if r.has("comment") {
			set.Entries[i]["comment"] = r.str("comment")
		}
		if r.has("nomatch") {
			set.Entries[i]["nomatch"] = itoa(b2i(r.bool("nomatch")))
		}
		return nil, nil
	})
	handle("DELETE /cluster/firewall/ipset/{name}/{cidr}", func(s *Sim, r *req) (any, error) {
		set, i, err := entry(s, r)
		if err != nil {
			return nil, err
		}
		set.Entries = slices.Delete(set.Entries, i, i+1)
		return nil, nil
	})

	// PVE keeps alias names in lower case.
	aliasName := func(r *req) string { return strings.ToLower(r.str("name")) }
	aliasEntry := func(name string, a *Alias) map[string]any {
		e := map[string]any{"name": name, "cidr": a.CIDR, "ipversion": ipVersion(a.CIDR)}
		if a.Comment != "" {
			e["comment"] = a.Comment
		}
		return e
	}
	aliasDigest := func(s *Sim) string {
		m := map[string]string{}
		for k, a := range s.st.Aliases {
			m[k] = a.CIDR + " " + a.Comment
		}
		return digest(m)
	}
	handle("GET /cluster/firewall/aliases", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		d := aliasDigest(s)
		for _, name := range slices.Sorted(maps.Keys(s.st.Aliases)) {
			e := aliasEntry(name, s.st.Aliases[name])
			e["digest"] = d
			out = append(out, e)
		}
		return out, nil
	})
	handle("POST /cluster/firewall/aliases", func(s *Sim, r *req) (any, error) {
		name := aliasName(r)
		if s.st.Aliases[name] != nil {
			return nil, errf(500, "alias '%s' already exists", name)
		}
		s.st.Aliases[name] = &Alias{CIDR: r.str("cidr"), Comment: r.str("comment")}
		return nil, nil
	})
	handle("GET /cluster/firewall/aliases/{name}", func(s *Sim, r *req) (any, error) {
		a := s.st.Aliases[aliasName(r)]
		if a == nil {
			return nil, errf(500, "no such alias '%s'", aliasName(r))
		}
		e := aliasEntry(aliasName(r), a)
		e["digest"] = aliasDigest(s)
		return e, nil
	})
	handle("PUT /cluster/firewall/aliases/{name}", func(s *Sim, r *req) (any, error) {
		name := aliasName(r)
		a := s.st.Aliases[name]
		if a == nil {
			return nil, errf(500, "no such alias '%s'", name)
		}
		if r.has("digest") && r.str("digest") != aliasDigest(s) {
			return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
		}
		a.CIDR = r.str("cidr")
		if r.has("comment") {
			a.Comment = r.str("comment")
		}
		if nn := strings.ToLower(r.str("rename")); nn != "" && nn != name {
			if s.st.Aliases[nn] != nil {
				return nil, errf(500, "alias '%s' already exists", nn)
			}
			delete(s.st.Aliases, name)
			s.st.Aliases[nn] = a
		}
		return nil, nil
	})
	handle("DELETE /cluster/firewall/aliases/{name}", func(s *Sim, r *req) (any, error) {
		name := aliasName(r)
		if s.st.Aliases[name] == nil {
			return nil, errf(500, "no such alias '%s'", name)
		}
		delete(s.st.Aliases, name)
		return nil, nil
	})
}

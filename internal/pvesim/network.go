package pvesim

import (
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// staged returns the configuration changes are made to (interfaces.new),
// creating it from the running one on first change.
func (n *NodeState) staged() map[string]*Iface {
	if n.Pending == nil {
		n.Pending = copyIfaces(n.Running)
	}
	return n.Pending
}

// current is what GET shows: the staged config when there is one.
func (n *NodeState) current() map[string]*Iface {
	if n.Pending != nil {
		return n.Pending
	}
	return n.Running
}

func ifaceLines(m map[string]*Iface) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		ifc := m[name]
		out = append(out, fmt.Sprintf("iface %s (%s)", name, ifc.Type))
		for _, k := range slices.Sorted(maps.Keys(ifc.Params)) {
			out = append(out, fmt.Sprintf("\t%s %s", k, ifc.Params[k]))
		}
	}
	return out
}

// changes is a small diff of running versus staged, like PVE's "changes".
func (n *NodeState) changes() string {
	if n.Pending == nil {
		return ""
	}
	a, b := ifaceLines(n.Running), ifaceLines(n.Pending)
	if slices.Equal(a, b) {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("--- /etc/network/interfaces\n+++ /etc/network/interfaces.new\n")
	for _, l := range a {
		if !slices.Contains(b, l) {
			sb.WriteString("-" + l + "\n")
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			sb.WriteString("+" + l + "\n")
		}
	}
	return sb.String()
}

func ifaceEntry(ifc *Iface, active bool) map[string]any {
	e := map[string]any{"iface": ifc.Name, "type": ifc.Type, "families": []string{"inet"}, "method": "manual", "priority": 10}
	for k, v := range ifc.Params {
		switch k {
		case "autostart", "bridge_vlan_aware":
			e[k] = b2i(trueRE.MatchString(v))
		default:
			e[k] = v
		}
	}
	if c := ifc.Params["cidr"]; c != "" {
		if p, err := netip.ParsePrefix(c); err == nil {
			e["address"] = p.Addr().String()
			e["netmask"] = fmt.Sprint(p.Bits())
			if _, ok := ifc.Params["method"]; !ok {
				e["method"] = "static"
			}
		}
	}
	if active {
		e["active"] = 1
	}
	return e
}

func ifaceParamErr(msg string) error {
	return &apiError{status: http.StatusBadRequest, msg: "Parameter verification failed.", errors: map[string]string{"iface": msg}}
}

var ifaceSkip = map[string]bool{"node": true, "iface": true, "type": true, "delete": true, "digest": true}

func init() {
	handle("GET /nodes/{node}/network", func(s *Sim, r *req) (any, error) {
		n := s.st.Nodes[r.str("node")]
		typ := r.str("type")
		out := []map[string]any{}
		cur := n.current()
		for _, name := range slices.Sorted(maps.Keys(cur)) {
			ifc := cur[name]
			switch typ {
			case "", "include_sdn":
			case "any_bridge", "any_local_bridge":
				if ifc.Type != "bridge" && ifc.Type != "OVSBridge" {
					continue
				}
			default:
				if ifc.Type != typ {
					continue
				}
			}
			out = append(out, ifaceEntry(ifc, n.Running[name] != nil))
		}
		return withChanges{data: out, changes: n.changes()}, nil
	})
	handle("POST /nodes/{node}/network", func(s *Sim, r *req) (any, error) {
		n := s.st.Nodes[r.str("node")]
		name := r.str("iface")
		if n.current()[name] != nil {
			return nil, ifaceParamErr("interface already exists")
		}
		ifc := &Iface{Name: name, Type: r.str("type"), Params: map[string]string{}}
		for k := range r.params {
			if !ifaceSkip[k] {
				ifc.Params[k] = r.str(k)
			}
		}
		n.staged()[name] = ifc
		return nil, nil
	})
	handle("GET /nodes/{node}/network/{iface}", func(s *Sim, r *req) (any, error) {
		n := s.st.Nodes[r.str("node")]
		ifc := n.current()[r.str("iface")]
		if ifc == nil {
			return nil, ifaceParamErr("interface does not exist")
		}
		return ifaceEntry(ifc, n.Running[ifc.Name] != nil), nil
	})
	handle("PUT /nodes/{node}/network/{iface}", func(s *Sim, r *req) (any, error) {
		n := s.st.Nodes[r.str("node")]
		name := r.str("iface")
		if n.current()[name] == nil {
			return nil, ifaceParamErr("interface does not exist")
		}
		ifc := n.staged()[name]
		if ifc.Type != r.str("type") {
			return nil, errf(500, "iface type mismatch ('%s' != '%s')", ifc.Type, r.str("type"))
		}
		for _, k := range splitRE.Split(r.str("delete"), -1) {
			delete(ifc.Params, k)
		}
		for k := range r.params {
			if !ifaceSkip[k] {
				ifc.Params[k] = r.str(k)
			}
		}
		return nil, nil
	})
	handle("DELETE /nodes/{node}/network/{iface}", func(s *Sim, r *req) (any, error) {
		n := s.st.Nodes[r.str("node")]
		name := r.str("iface")
		if n.current()[name] == nil {
			return nil, ifaceParamErr("interface does not exist")
		}
		delete(n.staged(), name)
		return nil, nil
	})
	handle("PUT /nodes/{node}/network", func(s *Sim, r *req) (any, error) {
		n := s.st.Nodes[r.str("node")]
		return s.startTask(n.Name, "srvreload", "networking", r.user, func(failed string) error {
			if failed != "" || n.Pending == nil {
				return nil
			}
			old, neu := n.Running[s.st.mgmtBridge], n.Pending[s.st.mgmtBridge]
			if old != nil && (neu == nil || neu.Params["cidr"] != old.Params["cidr"] ||
				neu.Params["bridge_ports"] != old.Params["bridge_ports"] || neu.Params["gateway"] != old.Params["gateway"]) {
				n.ManagementCut = true
			}
			n.Running, n.Pending = n.Pending, nil
			return nil
		}), nil
	})
	handle("DELETE /nodes/{node}/network", func(s *Sim, r *req) (any, error) {
		s.st.Nodes[r.str("node")].Pending = nil
		return nil, nil
	})
}

package pvesim

import (
	"strings"
)

// guestEntry is a guest as /cluster/resources and the node lists show it.
func guestEntry(g *Guest, withNode bool) map[string]any {
	e := map[string]any{
		"vmid": g.VMID, "name": g.Config["name"], "status": g.Status, "template": 0,
		"maxmem": memBytes(g), "maxcpu": atoiOr(g.Config["cores"], 1), "maxdisk": int64(0),
		"uptime": 0, "cpu": 0.0, "mem": 0,
	}
	if g.Type == "lxc" {
		e["name"] = g.Config["hostname"]
	}
	if t := g.Config["tags"]; t != "" {
		e["tags"] = t
	}
	if g.Lock != "" {
		e["lock"] = g.Lock
	}
	if withNode {
		e["id"] = g.Type + "/" + itoa(g.VMID)
		e["type"] = g.Type
		e["node"] = g.Node
	}
	return e
}

// guestUses reports whether a guest's config references a volume.
func (s *Sim) guestUses(g *Guest, volid string) bool {
	for _, v := range g.Config {
		if first, _, _ := strings.Cut(v, ","); first == volid {
			return true
		}
	}
	return false
}

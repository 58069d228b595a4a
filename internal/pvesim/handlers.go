package pvesim

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// A handler runs with the simulator locked and returns the "data" of the
// answer or an error (an *apiError for a status other than 500).
type handler func(s *Sim, r *req) (any, error)

// handlers is keyed by "METHOD /schema/path/{template}".
var handlers = map[string]handler{}

func handle(key string, h handler) {
	if _, dup := handlers[key]; dup {
		panic("pvesim: duplicate handler " + key)
	}
	handlers[key] = func(s *Sim, r *req) (any, error) {
		if n, ok := r.params["node"]; ok && strings.Contains(key, "{node}") {
			if s.st.Nodes[n[0]] == nil {
				return nil, errf(500, "no such node '%s'", n[0])
			}
		}
		if st, ok := r.params["storage"]; ok && strings.Contains(key, "{storage}") {
			if s.st.storage(st[0]) == nil {
				return nil, errf(500, "storage '%s' does not exist", st[0])
			}
		}
		return h(s, r)
	}
}

// Simulated returns the "METHOD template" keys the simulator models.
func Simulated() []string {
	out := make([]string, 0, len(handlers))
	for k := range handlers {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type req struct {
	sim    *Sim
	params url.Values
	tok    Token
	user   string
	upload *upload
}

func (r *req) has(k string) bool   { _, ok := r.params[k]; return ok }
func (r *req) str(k string) string { return r.params.Get(k) }
func (r *req) int(k string) int    { n, _ := strconv.Atoi(r.params.Get(k)); return n }
func (r *req) intOr(k string, d int) int {
	if !r.has(k) {
		return d
	}
	return r.int(k)
}
func (r *req) bool(k string) bool { return trueRE.MatchString(r.params.Get(k)) }

// perm checks a privilege the schema only describes in prose.
func (r *req) perm(path string, privs ...string) error {
	if ok, what := tokenHas(r.tok, path, privs, false); !ok {
		return permErr(what)
	}
	return nil
}

// PVE's answers describe booleans as 0/1.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func init() {
	handle("GET /version", func(s *Sim, r *req) (any, error) {
		return map[string]any{"version": "9.1.3", "release": "9.1", "repoid": "0123456789abcdef", "console": "xtermjs"}, nil
	})
	handle("GET /nodes", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		for _, n := range slices.Sorted(maps.Keys(s.st.Nodes)) {
			out = append(out, nodeEntry(n))
		}
		return out, nil
	})
	handle("GET /nodes/{node}/status", func(s *Sim, r *req) (any, error) {
		return map[string]any{
			"uptime": 123456, "cpu": 0.05, "loadavg": []string{"0.10", "0.20", "0.30"},
			"cpuinfo":    map[string]any{"cpus": 8, "cores": 8, "sockets": 1, "model": "pvesim virtual CPU", "mhz": "2400.000"},
			"memory":     map[string]any{"total": int64(16) << 30, "used": int64(2) << 30, "free": int64(14) << 30},
			"rootfs":     map[string]any{"total": int64(100) << 30, "used": int64(10) << 30, "free": int64(90) << 30, "avail": int64(90) << 30},
			"pveversion": "pve-manager/9.1.3/0123456789abcdef",
			"kversion":   "Linux 6.17.2-1-pve #1 SMP PREEMPT_DYNAMIC",
		}, nil
	})
	handle("GET /cluster/nextid", func(s *Sim, r *req) (any, error) {
		if r.has("vmid") {
			id := r.int("vmid")
			if s.st.Guests[id] != nil {
				return nil, paramErr(map[string]string{"vmid": "VM " + strconv.Itoa(id) + " already exists"})
			}
			return strconv.Itoa(id), nil
		}
		for id := 100; ; id++ {
			if s.st.Guests[id] == nil {
				return strconv.Itoa(id), nil
			}
		}
	})
	handle("GET /cluster/resources", func(s *Sim, r *req) (any, error) {
		typ := r.str("type")
		out := []map[string]any{}
		if typ == "" || typ == "node" {
			for _, n := range slices.Sorted(maps.Keys(s.st.Nodes)) {
				out = append(out, nodeEntry(n))
			}
		}
		if typ == "" || typ == "storage" {
			for _, n := range slices.Sorted(maps.Keys(s.st.Nodes)) {
				for _, sc := range s.st.Storages {
					out = append(out, map[string]any{
						"id": "storage/" + n + "/" + sc.ID, "type": "storage", "storage": sc.ID, "node": n,
						"status": "available", "plugintype": sc.Type, "content": strings.Join(sc.Content, ","),
						"maxdisk": sc.Total, "disk": s.st.used(sc.ID), "shared": 0,
					})
				}
			}
		}
		if typ == "" || typ == "vm" {
			for _, id := range slices.Sorted(maps.Keys(s.st.Guests)) {
				if ok, _ := tokenHas(r.tok, "/vms/"+itoa(id), []string{"VM.Audit"}, false); ok {
					out = append(out, guestEntry(s.st.Guests[id], true))
				}
			}
		}
		return out, nil
	})
}

func nodeEntry(n string) map[string]any {
	return map[string]any{
		"node": n, "id": "node/" + n, "type": "node", "status": "online", "level": "",
		"cpu": 0.05, "maxcpu": 8, "mem": int64(2) << 30, "maxmem": int64(16) << 30,
		"disk": int64(10) << 30, "maxdisk": int64(100) << 30, "uptime": 123456,
	}
}

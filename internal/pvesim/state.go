package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Volume is a file or disk on a storage.
type Volume struct {
	VolID   string // "local:iso/debian.iso", "local-lvm:vm-100-disk-0"
	Content string // iso, vztmpl, import, snippets, images, rootdir
	Format  string
	Size    int64
	VMID    int
	CTime   int64
	Data    []byte // the uploaded bytes, for volumes sent to .../upload
}

// Iface is one entry of a node's network configuration.
type Iface struct {
	Name   string
	Type   string
	Params map[string]string // cidr, bridge_ports, autostart, comments, ...
}

// Guest is a QEMU VM or an LXC container.
type Guest struct {
	Type      string // "qemu" or "lxc"
	VMID      int
	Node      string
	Config    map[string]string
	Status    string // "running" or "stopped"
	Lock      string
	StartedAt time.Time
	Firewall  FirewallConf
}

// FirewallConf holds firewall rules and options of the cluster, a security
// group or a guest.
type FirewallConf struct {
	Comment string
	Options map[string]string
	Rules   []map[string]string
}

// IPSet is a cluster IP set.
type IPSet struct {
	Comment string
	Entries []map[string]string // cidr, comment, nomatch
}

// Alias is a cluster firewall alias.
type Alias struct {
	CIDR    string
	Comment string
}

// NodeState is one node's network: Running is what is applied, Pending what
// is staged in /etc/network/interfaces.new (nil when nothing is staged).
type NodeState struct {
	Name    string
	Running map[string]*Iface
	Pending map[string]*Iface
	// ManagementCut is set when a network reload removed or changed the
	// bridge carrying the node's management address.
	ManagementCut bool
}

// Task is an asynchronous worker.
type Task struct {
	UPID       string
	Node       string
	Type       string
	ID         string
	User       string
	PID        int
	PStart     int
	StartTime  int64
	Status     string // running, stopped
	ExitStatus string // OK or the error
	Log        []string
}

// State is a snapshot of everything the simulator holds.
type State struct {
	Nodes     map[string]*NodeState
	Storages  []StorageConfig
	Volumes   map[string]*Volume // by volid
	Guests    map[int]*Guest
	Groups    map[string]*FirewallConf
	IPSets    map[string]*IPSet
	Aliases   map[string]*Alias
	ClusterFW FirewallConf
	Tasks     []*Task
}

type state struct {
	State
	mgmtBridge string
	templates  []string
}

func newState(opts Options) *state {
	st := &state{State: State{
		Nodes:     map[string]*NodeState{},
		Volumes:   map[string]*Volume{},
		Guests:    map[int]*Guest{},
		Groups:    map[string]*FirewallConf{},
		IPSets:    map[string]*IPSet{},
		Aliases:   map[string]*Alias{},
		ClusterFW: FirewallConf{Options: map[string]string{}},
	}, mgmtBridge: "vmbr0"}
	nodes := opts.Nodes
	if len(nodes) == 0 {
		nodes = []string{"pve"}
	}
	for i, n := range nodes {
		st.Nodes[n] = &NodeState{Name: n, Running: map[string]*Iface{
			"eno1": {Name: "eno1", Type: "eth", Params: map[string]string{"method": "manual"}},
			"vmbr0": {Name: "vmbr0", Type: "bridge", Params: map[string]string{
				"method": "static", "autostart": "1", "bridge_ports": "eno1", "bridge_stp": "off", "bridge_fd": "0",
				"cidr": fmt.Sprintf("192.168.1.%d/24", 10+i), "gateway": "192.168.1.1",
			}},
		}}
	}
	st.Storages = opts.Storages
	if len(st.Storages) == 0 {
		st.Storages = []StorageConfig{
			{ID: "local", Type: "dir", Content: []string{"iso", "vztmpl", "import", "snippets", "backup"}, Total: 100 << 30},
			{ID: "local-lvm", Type: "lvmthin", Content: []string{"images", "rootdir"}, Total: 350 << 30},
		}
	}
	st.templates = opts.Templates
	if len(st.templates) == 0 {
		st.templates = []string{
			"debian-12-standard_12.12-1_amd64.tar.zst",
			"debian-13-standard_13.1-2_amd64.tar.zst",
			"alpine-3.22-default_20250617_amd64.tar.xz",
		}
	}
	return st
}

func (st *state) storage(id string) *StorageConfig {
	for i := range st.Storages {
		if st.Storages[i].ID == id {
			return &st.Storages[i]
		}
	}
	return nil
}

func (sc *StorageConfig) supports(content string) bool { return slices.Contains(sc.Content, content) }

func (st *state) used(storage string) int64 {
	var n int64
	for _, v := range st.Volumes {
		if strings.HasPrefix(v.VolID, storage+":") {
			n += v.Size
		}
	}
	return n
}

// Snapshot returns a deep copy of the simulator's state.
func (s *Sim) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.st.State
	out := State{
		Nodes:     map[string]*NodeState{},
		Storages:  slices.Clone(src.Storages),
		Volumes:   map[string]*Volume{},
		Guests:    map[int]*Guest{},
		Groups:    map[string]*FirewallConf{},
		IPSets:    map[string]*IPSet{},
		Aliases:   map[string]*Alias{},
		ClusterFW: copyFW(src.ClusterFW),
	}
	for k, n := range src.Nodes {
		c := &NodeState{Name: n.Name, Running: copyIfaces(n.Running), ManagementCut: n.ManagementCut}
		if n.Pending != nil {
			c.Pending = copyIfaces(n.Pending)
		}
		out.Nodes[k] = c
	}
	for k, v := range src.Volumes {
		c := *v
		out.Volumes[k] = &c
	}
	for k, g := range src.Guests {
		c := *g
		c.Config = maps.Clone(g.Config)
		c.Firewall = copyFW(g.Firewall)
		out.Guests[k] = &c
	}
	for k, g := range src.Groups {
		c := copyFW(*g)
		out.Groups[k] = &c
	}
	for k, v := range src.IPSets {
		c := &IPSet{Comment: v.Comment}
		for _, e := range v.Entries {
			c.Entries = append(c.Entries, maps.Clone(e))
		}
		out.IPSets[k] = c
	}
	for k, v := range src.Aliases {
		c := *v
		out.Aliases[k] = &c
	}
	for _, t := range src.Tasks {
		c := *t
		c.Log = slices.Clone(t.Log)
		out.Tasks = append(out.Tasks, &c)
	}
	return out
}

func copyIfaces(m map[string]*Iface) map[string]*Iface {
	out := map[string]*Iface{}
	for k, v := range m {
		out[k] = &Iface{Name: v.Name, Type: v.Type, Params: maps.Clone(v.Params)}
	}
	return out
}

func copyFW(f FirewallConf) FirewallConf {
	c := FirewallConf{Comment: f.Comment, Options: maps.Clone(f.Options)}
	for _, r := range f.Rules {
		c.Rules = append(c.Rules, maps.Clone(r))
	}
	return c
}

// digest is a stable SHA-1 over a flat config, like PVE's config digests.
func digest(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	h := sha1.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s: %s\n", k, m[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

var tagSplitRE = regexp.MustCompile(`[;, ]+`)

// normalizeTags stores tags as PVE does: ';'-separated, unique.
func normalizeTags(v string) string {
	var out []string
	for _, t := range tagSplitRE.Split(v, -1) {
		if t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return strings.Join(out, ";")
}

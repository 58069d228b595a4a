package pvesim

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
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

func kindName(typ string) string {
	if typ == "lxc" {
		return "CT"
	}
	return "VM"
}

func confPath(node, typ string, vmid int) string {
	dir := "qemu-server"
	if typ == "lxc" {
		dir = "lxc"
	}
	return fmt.Sprintf("nodes/%s/%s/%d.conf", node, dir, vmid)
}

// guest finds the guest a request names, with PVE's error when it is absent.
func (s *Sim) guest(r *req, typ string) (*Guest, error) {
	vmid, node := r.int("vmid"), r.str("node")
	g := s.st.Guests[vmid]
	if g == nil || g.Type != typ || g.Node != node {
		return nil, errf(500, "Configuration file '%s' does not exist", confPath(node, typ, vmid))
	}
	return g, nil
}

func checkLock(g *Guest, r *req) error {
	if g.Lock != "" && !r.bool("skiplock") {
		return errf(500, "%s is locked (%s)", kindName(g.Type), g.Lock)
	}
	return nil
}

var (
	diskKeyRE = regexp.MustCompile(`^(?:(?:scsi|virtio|sata|ide)\d+|efidisk0|tpmstate0|rootfs|mp\d+)$`)
	netKeyRE  = regexp.MustCompile(`^net\d+$`)
	sizeRE    = regexp.MustCompile(`^(\d+(?:\.\d+)?)$`)
)

// notConfig lists create/update parameters that are not stored in the config.
var notConfig = map[string]bool{
	"node": true, "vmid": true, "digest": true, "delete": true, "skiplock": true, "start": true,
	"storage": true, "force": true, "unique": true, "pool": true, "archive": true, "revert": true,
	"import-working-storage": true, "live-restore": true, "bwlimit": true, "background_delay": true,
	"ostemplate": true, "password": true, "ssh-public-keys": true, "restore": true,
	"ignore-unpack-errors": true, "ha-managed": true,
}

// checkDisk validates a disk value before any change: storage exists and
// holds the content, an import source exists. It returns the storages used.
func (s *Sim) checkDisk(typ, key, val string) (string, error) {
	first, opts, _ := strings.Cut(val, ",")
	if first == "none" || first == "cdrom" || strings.HasPrefix(first, "/") {
		return "", nil
	}
	sid, rest, ok := strings.Cut(first, ":")
	if !ok {
		return "", errf(500, "unable to parse volume ID '%s'", first)
	}
	sc := s.st.storage(sid)
	if sc == nil {
		return "", errf(500, "storage '%s' does not exist", sid)
	}
	content := "images"
	if typ == "lxc" {
		content = "rootdir"
	}
	if strings.Contains(opts, "media=cdrom") {
		content = "iso"
	}
	if sizeRE.MatchString(rest) || rest == "cloudinit" {
		if !sc.supports(content) {
			return "", errf(500, "storage '%s' does not support content-type '%s'", sid, content)
		}
		for _, o := range strings.Split(opts, ",") {
			if src, ok := strings.CutPrefix(o, "import-from="); ok && !strings.HasPrefix(src, "/") && !s.volumeExists(src) {
				return "", errf(500, "volume '%s' does not exist", src)
			}
		}
		return sid, nil
	}
	if !s.volumeExists(first) {
		return "", errf(500, "volume '%s' does not exist", first)
	}
	return sid, nil
}

// allocDisk turns "STORAGE:SIZE[,opts]", "STORAGE:0,import-from=VOL" or
// "STORAGE:cloudinit" into an allocated volume and returns the config value.
func (s *Sim) allocDisk(g *Guest, val string) string {
	first, opts, _ := strings.Cut(val, ",")
	sid, rest, ok := strings.Cut(first, ":")
	if !ok || s.st.storage(sid) == nil {
		return val
	}
	content := "images"
	if g.Type == "lxc" {
		content = "rootdir"
	}
	var keep []string
	var size int64
	var importFrom string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		if src, ok := strings.CutPrefix(o, "import-from="); ok {
			importFrom = src
			continue
		}
		if strings.HasPrefix(o, "size=") {
			continue
		}
		keep = append(keep, o)
	}
	var name string
	switch {
	case rest == "cloudinit":
		name = fmt.Sprintf("vm-%d-cloudinit", g.VMID)
		size = 4 << 20
		keep = append([]string{"media=cdrom"}, slices.DeleteFunc(keep, func(o string) bool { return o == "media=cdrom" })...)
	case sizeRE.MatchString(rest):
		f, _ := strconv.ParseFloat(rest, 64)
		size = int64(f * (1 << 30))
		if importFrom != "" {
			if src := s.st.Volumes[importFrom]; src != nil {
				size = src.Size
			}
		}
		for i := 0; ; i++ {
			name = fmt.Sprintf("vm-%d-disk-%d", g.VMID, i)
			if s.st.Volumes[sid+":"+name] == nil {
				break
			}
		}
	default:
		return val
	}
	volid := sid + ":" + name
	s.st.Volumes[volid] = &Volume{VolID: volid, Content: content, Format: "raw", Size: size, VMID: g.VMID, CTime: s.now().Unix()}
	out := volid
	if len(keep) > 0 {
		out += "," + strings.Join(keep, ",")
	}
	if rest != "cloudinit" {
		out += ",size=" + fmtSize(size)
	}
	return out
}

func fmtSize(b int64) string {
	if b%(1<<30) == 0 {
		return fmt.Sprintf("%dG", b>>30)
	}
	return fmt.Sprintf("%dM", b>>20)
}

func randMAC() string {
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", rand.IntN(256), rand.IntN(256), rand.IntN(256))
}

// withMAC adds a generated MAC to a NIC without one, as PVE does.
func withMAC(typ, val string) string {
	parts, _ := parsePropertyString(val)
	if typ == "lxc" {
		for _, kv := range parts {
			if kv[0] == "hwaddr" {
				return val
			}
		}
		return val + ",hwaddr=" + randMAC()
	}
	models := []string{"virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "e1000-82540em", "e1000-82544gc", "e1000-82545em"}
	var out []string
	for _, kv := range parts {
		switch {
		case kv[0] == "" && slices.Contains(models, kv[1]):
			out = append(out, kv[1]+"="+randMAC())
		case kv[0] == "model":
			out = append(out, kv[1]+"="+randMAC())
		case kv[0] == "macaddr":
			continue
		default:
			if kv[0] == "" {
				out = append(out, kv[1])
			} else {
				out = append(out, kv[0]+"="+kv[1])
			}
		}
	}
	for _, kv := range parts {
		if kv[0] == "macaddr" {
			for i, o := range out {
				if k, _, _ := strings.Cut(o, "="); slices.Contains(models, k) {
					out[i] = k + "=" + kv[1]
				}
			}
		}
	}
	return strings.Join(out, ",")
}

// bridgeOf returns the bridge= of a NIC value.
func bridgeOf(val string) string {
	parts, _ := parsePropertyString(val)
	for _, kv := range parts {
		if kv[0] == "bridge" {
			return kv[1]
		}
	}
	return ""
}

// applyConfig checks and applies create/update parameters to a config.
// With alloc false, new disks are left for the caller to allocate later.
func (s *Sim) applyConfig(g *Guest, r *req, create bool) (pendingDisks map[string]string, err error) {
	pendingDisks = map[string]string{}
	for k := range r.params {
		if notConfig[k] {
			continue
		}
		v := r.str(k)
		if diskKeyRE.MatchString(k) {
			sid, err := s.checkDisk(g.Type, k, v)
			if err != nil {
				return nil, err
			}
			if sid != "" {
				if err := r.perm("/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
					return nil, err
				}
			}
		}
	}
	if r.has("delete") {
		for _, k := range splitRE.Split(r.str("delete"), -1) {
			if k == "" {
				continue
			}
			if diskKeyRE.MatchString(k) && g.Config[k] != "" {
				for i := 0; ; i++ {
					if _, used := g.Config["unused"+itoa(i)]; !used {
						g.Config["unused"+itoa(i)], _, _ = strings.Cut(g.Config[k], ",")
						break
					}
				}
			}
			delete(g.Config, k)
		}
	}
	for k := range r.params {
		if notConfig[k] {
			continue
		}
		v := r.str(k)
		switch {
		case diskKeyRE.MatchString(k):
			pendingDisks[k] = v
			continue
		case netKeyRE.MatchString(k):
			v = withMAC(g.Type, v)
		case k == "tags":
			v = normalizeTags(v)
		}
		g.Config[k] = v
	}
	return pendingDisks, nil
}

// configAnswer renders a config with the JSON types of the schema.
func (s *Sim) configAnswer(g *Guest) map[string]any {
	ep, _ := s.schema.match(splitPath("/nodes/n/" + g.Type))
	var m *method
	if ep != nil {
		m = ep.methods["POST"]
	}
	out := map[string]any{"digest": digest(g.Config)}
	for k, v := range g.Config {
		out[k] = v
		if m == nil {
			continue
		}
		if p := m.lookup(k); p != nil {
			switch p.Type {
			case "integer":
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					out[k] = n
				}
			case "number":
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					out[k] = f
				}
			case "boolean":
				out[k] = b2i(trueRE.MatchString(v))
			}
		}
	}
	return out
}

// startChecks is what starting a guest needs: its bridges applied on the
// node, its cloud-init snippets present.
func (s *Sim) startChecks(g *Guest) error {
	node := s.st.Nodes[g.Node]
	for _, k := range slices.Sorted(maps.Keys(g.Config)) {
		v := g.Config[k]
		if netKeyRE.MatchString(k) {
			br := bridgeOf(v)
			if ifc := node.Running[br]; br != "" && (ifc == nil || ifc.Type != "bridge") {
				return fmt.Errorf("bridge '%s' does not exist", br)
			}
		}
		if k == "cicustom" {
			parts, _ := parsePropertyString(v)
			for _, kv := range parts {
				if !s.volumeExists(kv[1]) {
					return fmt.Errorf("volume '%s' does not exist", kv[1])
				}
			}
		}
	}
	return nil
}

func (s *Sim) guestTaskType(typ, action string) string {
	if typ == "lxc" {
		return "vz" + action
	}
	return "qm" + action
}

func init() {
	for _, typ := range []string{"qemu", "lxc"} {
		base := "/nodes/{node}/" + typ
		handle("GET "+base, func(s *Sim, r *req) (any, error) {
			out := []map[string]any{}
			for _, id := range slices.Sorted(maps.Keys(s.st.Guests)) {
				g := s.st.Guests[id]
				if g.Type != typ || g.Node != r.str("node") {
					continue
				}
				if ok, _ := tokenHas(r.tok, "/vms/"+itoa(id), []string{"VM.Audit"}, false); !ok {
					continue
				}
				out = append(out, guestEntry(g, false))
			}
			return out, nil
		})
		handle("POST "+base, func(s *Sim, r *req) (any, error) { return s.createGuest(r, typ) })
		handle("GET "+base+"/{vmid}", func(s *Sim, r *req) (any, error) {
			if _, err := s.guest(r, typ); err != nil {
				return nil, err
			}
			return []map[string]any{{"subdir": "config"}, {"subdir": "status"}, {"subdir": "firewall"}}, nil
		})
		handle("GET "+base+"/{vmid}/config", func(s *Sim, r *req) (any, error) {
			g, err := s.guest(r, typ)
			if err != nil {
				return nil, err
			}
			return s.configAnswer(g), nil
		})
		update := func(async bool) handler {
			return func(s *Sim, r *req) (any, error) {
				g, err := s.guest(r, typ)
				if err != nil {
					return nil, err
				}
				if err := checkLock(g, r); err != nil {
					return nil, err
				}
				if r.has("digest") && r.str("digest") != digest(g.Config) {
					return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
				}
				disks, err := s.applyConfig(g, r, false)
				if err != nil {
					return nil, err
				}
				if !async {
					for k, v := range disks {
						g.Config[k] = s.allocDisk(g, v)
					}
					return nil, nil
				}
				return s.startTask(g.Node, "qmconfig", itoa(g.VMID), r.user, func(failed string) error {
					if failed != "" {
						return nil
					}
					for k, v := range disks {
						g.Config[k] = s.allocDisk(g, v)
					}
					return nil
				}), nil
			}
		}
		handle("PUT "+base+"/{vmid}/config", update(false))
		if typ == "qemu" {
			handle("POST "+base+"/{vmid}/config", update(true))
		}
		handle("GET "+base+"/{vmid}/status/current", func(s *Sim, r *req) (any, error) {
			g, err := s.guest(r, typ)
			if err != nil {
				return nil, err
			}
			e := guestEntry(g, false)
			e["cpus"] = atoiOr(g.Config["cores"], 1)
			e["ha"] = map[string]any{"managed": 0}
			if typ == "qemu" {
				e["qmpstatus"] = g.Status
				if agentEnabled(g) {
					e["agent"] = 1
				}
			}
			if g.Status == "running" {
				e["uptime"] = int(s.now().Sub(g.StartedAt).Seconds())
			}
			return e, nil
		})
		handle("POST "+base+"/{vmid}/status/start", func(s *Sim, r *req) (any, error) {
			g, err := s.guest(r, typ)
			if err != nil {
				return nil, err
			}
			if err := checkLock(g, r); err != nil {
				return nil, err
			}
			if g.Status == "running" {
				return nil, errf(500, "%s %d already running", kindName(typ), g.VMID)
			}
			return s.startTask(g.Node, s.guestTaskType(typ, "start"), itoa(g.VMID), r.user, func(failed string) error {
				if failed != "" {
					return nil
				}
				if err := s.startChecks(g); err != nil {
					return err
				}
				g.Status, g.StartedAt = "running", s.now()
				return nil
			}), nil
		})
		for _, action := range []string{"stop", "shutdown"} {
			handle("POST "+base+"/{vmid}/status/"+action, func(s *Sim, r *req) (any, error) {
				g, err := s.guest(r, typ)
				if err != nil {
					return nil, err
				}
				if err := checkLock(g, r); err != nil {
					return nil, err
				}
				return s.startTask(g.Node, s.guestTaskType(typ, action), itoa(g.VMID), r.user, func(failed string) error {
					if failed == "" {
						g.Status = "stopped"
					}
					return nil
				}), nil
			})
		}
		handle("PUT "+base+"/{vmid}/resize", func(s *Sim, r *req) (any, error) {
			g, err := s.guest(r, typ)
			if err != nil {
				return nil, err
			}
			if err := checkLock(g, r); err != nil {
				return nil, err
			}
			if r.has("digest") && r.str("digest") != digest(g.Config) {
				return nil, errf(500, "detected modified configuration - file changed by other user? Try again.")
			}
			key := r.str("disk")
			val := g.Config[key]
			volid, _, _ := strings.Cut(val, ",")
			vol := s.st.Volumes[volid]
			if val == "" || vol == nil {
				return nil, errf(500, "disk '%s' does not exist", key)
			}
			size, err := newSize(vol.Size, r.str("size"))
			if err != nil {
				return nil, err
			}
			return s.startTask(g.Node, "resize", itoa(g.VMID), r.user, func(failed string) error {
				if failed != "" {
					return nil
				}
				vol.Size = size
				parts, _ := parsePropertyString(val)
				out := []string{volid}
				for _, kv := range parts[1:] {
					if kv[0] != "size" {
						out = append(out, kv[0]+"="+kv[1])
					}
				}
				g.Config[key] = strings.Join(append(out, "size="+fmtSize(size)), ",")
				return nil
			}), nil
		})
		handle("DELETE "+base+"/{vmid}", func(s *Sim, r *req) (any, error) {
			vmid, node := r.int("vmid"), r.str("node")
			g := s.st.Guests[vmid]
			if g == nil || g.Type != typ || g.Node != node {
				return nil, errf(500, "unable to find configuration file for %s %d on node '%s'", kindName(typ), vmid, node)
			}
			if err := checkLock(g, r); err != nil {
				return nil, err
			}
			if g.Status == "running" && !(typ == "lxc" && r.bool("force")) {
				return nil, errf(500, "%s %d is running - destroy failed", kindName(typ), vmid)
			}
			g.Lock = "destroyed"
			return s.startTask(node, s.guestTaskType(typ, "destroy"), itoa(vmid), r.user, func(failed string) error {
				if failed != "" {
					g.Lock = ""
					return nil
				}
				for id, v := range s.st.Volumes {
					if v.VMID == vmid && (r.bool("destroy-unreferenced-disks") || s.guestUses(g, id)) {
						delete(s.st.Volumes, id)
					}
				}
				delete(s.st.Guests, vmid)
				return nil
			}), nil
		})
	}
}

func agentEnabled(g *Guest) bool {
	v := g.Config["agent"]
	first, _, _ := strings.Cut(v, ",")
	return first == "1" || first == "enabled=1" || strings.Contains(v, "enabled=1")
}

func (s *Sim) createGuest(r *req, typ string) (any, error) {
	vmid, node := r.int("vmid"), r.str("node")
	if err := r.perm("/vms/"+itoa(vmid), "VM.Allocate"); err != nil {
		return nil, err
	}
	if g := s.st.Guests[vmid]; g != nil {
		return nil, errf(500, "%s %d already exists on node '%s'", kindName(g.Type), vmid, g.Node)
	}
	g := &Guest{Type: typ, VMID: vmid, Node: node, Config: map[string]string{}, Status: "stopped", Lock: "create"}
	if typ == "lxc" {
		tmpl := r.str("ostemplate")
		if !s.volumeExists(tmpl) {
			return nil, errf(500, "volume '%s' does not exist", tmpl)
		}
		_, file, _ := strings.Cut(tmpl, "/")
		ostype, _, _ := strings.Cut(file, "-")
		g.Config["arch"] = "amd64"
		g.Config["ostype"] = ostype
		if !r.has("rootfs") {
			st := r.str("storage")
			if st == "" {
				st = "local"
			}
			r.params.Set("rootfs", st+":4")
		}
	}
	disks, err := s.applyConfig(g, r, true)
	if err != nil {
		return nil, err
	}
	if typ == "qemu" && g.Config["smbios1"] == "" {
		g.Config["smbios1"] = fmt.Sprintf("uuid=%08x-0000-4000-8000-%012x", vmid, rand.Int64N(1<<48))
		g.Config["vmgenid"] = fmt.Sprintf("%08x-0000-4000-8000-%012x", rand.Uint32(), rand.Int64N(1<<48))
	}
	s.st.Guests[vmid] = g
	start := r.bool("start")
	return s.startTask(node, s.guestTaskType(typ, "create"), itoa(vmid), r.user, func(failed string) error {
		if failed != "" {
			delete(s.st.Guests, vmid)
			return nil
		}
		for _, k := range slices.Sorted(maps.Keys(disks)) {
			g.Config[k] = s.allocDisk(g, disks[k])
		}
		g.Lock = ""
		if start {
			if err := s.startChecks(g); err != nil {
				return err
			}
			g.Status, g.StartedAt = "running", s.now()
		}
		return nil
	}), nil
}

var resizeRE = regexp.MustCompile(`^(\+?)(\d+(?:\.\d+)?)([KMGT]?)$`)

// newSize applies a resize request ("+10G" grows, "32G" sets) as PVE does.
func newSize(cur int64, req string) (int64, error) {
	m := resizeRE.FindStringSubmatch(req)
	if m == nil {
		return 0, errf(500, "invalid size '%s'", req)
	}
	f, _ := strconv.ParseFloat(m[2], 64)
	unit := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[3]]
	n := int64(f * unit)
	if m[1] == "+" {
		n += cur
	}
	if n < cur {
		return 0, errf(500, "shrinking disks is not supported")
	}
	return n, nil
}

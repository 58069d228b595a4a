package proxmox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

// Resource types.
const (
	tBridge   = "bridge"
	tNetApply = "network-apply"
	tHostNAT  = "host-nat"
	tIPSet    = "fw-ipset"
	tGroup    = "fw-group"
	tImage    = "image"
	tTemplate = "template"
	tSnippet  = "snippet"
	tLXC      = "lxc"
	tVM       = "vm"
	tStart    = "start"
	tInstall  = "install"
)

// lxcTemplate is the appliance template the containers are made from; the
// newest version aplinfo offers is downloaded.
const lxcTemplate = "debian-12-standard"

// build is how to make one desired resource; Desired fills it, the
// executors read it.
type build struct {
	res plan.Resource

	// bridge
	iface, cidr string
	vlanAware   bool
	// fw-ipset
	cidrs []string
	// fw-group
	rules []fwRule
	// image
	url, volid, filename, content string
	// snippet and host-nat
	data []byte
	// guests, start and install
	m      spec.Machine
	create url.Values // parameters of the create call only
	config url.Values // parameters set on create and on update
	fwOpts url.Values
	group  string
	// tun passes /dev/net/tun into a container (the VPN's userspace
	// WireGuard); Proxmox lets only root@pam set devices, so it is done
	// with pct set over SSH.
	tun bool
	// install
	files   []installFile
	service string
}

type installFile struct {
	path string
	mode string // octal
	data []byte
	src  string // a host-side file to push instead of data (the binary)
}

// fwRule is one firewall rule as homelab writes it and reads it back.
type fwRule struct {
	Type, Action, Source, Dest, Proto, Dport, Comment string
}

func (r fwRule) String() string {
	s := r.Type + " " + r.Action
	for _, kv := range [][2]string{{"source", r.Source}, {"dest", r.Dest}, {"proto", r.Proto}, {"dport", r.Dport}} {
		if kv[1] != "" {
			s += " " + kv[0] + "=" + kv[1]
		}
	}
	return s
}

func (r fwRule) form() url.Values {
	v := url.Values{"type": {r.Type}, "action": {r.Action}, "enable": {"1"}}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("source", r.Source)
	set("dest", r.Dest)
	set("proto", r.Proto)
	set("dport", r.Dport)
	set("comment", r.Comment)
	return v
}

func rulesAttr(rs []fwRule) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return strings.Join(out, "; ")
}

// ownComment marks bridges, IP sets and groups as the lab's.
func (p *Provider) ownComment() string { return "homelab:" + p.lab.Name }

// ownTags are the tags every guest of the lab carries.
func (p *Provider) ownTags() []string { return []string{"homelab", "homelab-" + tagSafe(p.lab.Name)} }

// tagSafe lowercases a name into Proxmox's tag alphabet.
func tagSafe(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// fwName is a security group or IP set name: <lab>-<suffix>, starting
// with a letter, at most 18 characters (the group name limit).
func (p *Provider) fwName(suffix string) string {
	n := p.lab.Name
	if n == "" || !(n[0] >= 'a' && n[0] <= 'z' || n[0] >= 'A' && n[0] <= 'Z') {
		n = "h" + n
	}
	n = n + "-" + suffix
	if len(n) > 18 {
		n = n[:18]
	}
	return n
}

func short(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])[:10]
}

// guestHash is the hash of what homelab sets on a guest beyond cores,
// memory, disk and tags: its config keys (normalized, so that the same
// hash is computed from what Proxmox reports back), its firewall options
// and security group, and the TUN device.
func guestHash(cfg, fwOpts url.Values, group string, tun bool) string {
	n := url.Values{}
	for k, v := range cfg {
		n.Set(k, normValue(k, strings.Join(v, ",")))
	}
	f := url.Values{}
	for k, v := range fwOpts {
		f.Set(k, normValue(k, strings.Join(v, ",")))
	}
	return hashValues(n, f, url.Values{"group": {group}, "tun": {boolStr(tun)}})
}

// normValue puts a config value in one form: property strings
// (k=v,k=v) with their parts sorted, a bare default key named, the
// defaults Proxmox adds dropped, case folded.
func normValue(key, v string) string {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "=") && key != "agent" {
		return strings.ToLower(v)
	}
	var parts []string
	for _, p := range strings.Split(v, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case p == "" || p == "type=veth":
			continue
		case !strings.Contains(p, "=") && key == "agent":
			p = "enabled=" + p
		case !strings.Contains(p, "="):
			p = "_=" + p
		}
		parts = append(parts, p)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func hashValues(vs ...url.Values) string {
	var b strings.Builder
	for _, v := range vs {
		for _, k := range slices.Sorted(maps.Keys(v)) {
			fmt.Fprintf(&b, "%s=%s\n", k, strings.Join(v[k], ","))
		}
		b.WriteString("--\n")
	}
	return short([]byte(b.String()))
}

// Desired lists the resources of the lab on the Proxmox node.
func (p *Provider) Desired(lab *spec.Lab, arts []render.Artifact) ([]plan.Resource, error) {
	if lab != p.lab && lab != nil {
		p.lab = lab
	}
	byPath := map[string][]byte{}
	for _, a := range arts {
		byPath[a.Path] = a.Data
	}
	var errs []error
	art := func(name string) []byte {
		d, ok := byPath[name]
		if !ok {
			errs = append(errs, fmt.Errorf("rendered artifact %s is missing (render the lab first)", name))
		}
		return d
	}
	want := map[string]*build{}
	var order []string
	add := func(b *build) {
		id := b.res.ID()
		if _, dup := want[id]; !dup {
			order = append(order, id)
		}
		want[id] = b
	}
	L := p.lab
	node := p.px.Node

	// Networks: the wan bridge must exist; admin and apps bridges are ours.
	var bridgeIDs []string
	var active []string
	wan, _ := L.NetworkByRole(spec.RoleWAN)
	for _, n := range L.Networks {
		if n.Role == spec.RoleWAN || (wan != nil && n.Bridge == wan.Bridge) {
			continue
		}
		cidr := ""
		if n.Gateway.IsValid() {
			cidr = fmt.Sprintf("%s/%d", n.Gateway, n.CIDR.Bits())
		}
		b := &build{iface: n.Bridge, cidr: cidr, vlanAware: n.VLAN != 0}
		b.res = plan.Resource{Type: tBridge, Name: n.Bridge, Attrs: map[string]string{
			"cidr": cidr, "comments": p.ownComment(), "autostart": "1", "vlan_aware": boolStr(b.vlanAware),
		}}
		add(b)
		bridgeIDs = append(bridgeIDs, b.res.ID())
		active = append(active, n.Bridge+"="+cidr)
	}
	netDeps := []string{}
	if len(bridgeIDs) > 0 {
		slices.Sort(active)
		add(&build{res: plan.Resource{Type: tNetApply, Name: node, Attrs: map[string]string{"active": strings.Join(active, " ")}, DependsOn: bridgeIDs}})
		netDeps = []string{tNetApply + "/" + node}
		nat := p.natRules()
		add(&build{data: nat, res: plan.Resource{Type: tHostNAT, Name: node, Attrs: map[string]string{"sha": short(nat)}, DependsOn: netDeps}})
	}

	// Firewall: IP sets and security groups of the zone policy.
	ipsets := map[string][]string{}
	if n, ok := L.NetworkByRole(spec.RoleAdmin); ok {
		ipsets["admin"] = []string{n.CIDR.Masked().String()}
	}
	if n, ok := L.NetworkByRole(spec.RoleApps); ok {
		ipsets["apps"] = []string{n.CIDR.Masked().String()}
	}
	if L.VPN.Tunnel.IsValid() {
		ipsets["vpn"] = []string{L.VPN.Tunnel.Masked().String()}
	}
	machines := L.Machines()
	for _, m := range machines {
		if m.Role == spec.MachineLB {
			if a, ok := m.Address(spec.RoleApps); ok && a.IsValid() {
				ipsets["lb"] = []string{a.String()}
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ipsets)) {
		name := p.fwName(k)
		cs := slices.Sorted(slices.Values(ipsets[k]))
		add(&build{cidrs: cs, res: plan.Resource{Type: tIPSet, Name: name, Attrs: map[string]string{
			"cidrs": strings.Join(cs, " "), "comment": p.ownComment()}}})
	}
	groups := p.groupRules(ipsets)
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		rs := groups[g]
		var deps []string
		for _, r := range rs {
			for _, a := range []string{r.Source, r.Dest} {
				if strings.HasPrefix(a, "+") {
					deps = append(deps, tIPSet+"/"+strings.TrimPrefix(a, "+"))
				}
			}
		}
		slices.Sort(deps)
		add(&build{rules: rs, res: plan.Resource{Type: tGroup, Name: g, Attrs: map[string]string{
			"rules": rulesAttr(rs), "comment": p.ownComment()}, DependsOn: slices.Compact(deps)}})
	}

	// Images and the container template.
	var talosImage, debianImage, tmplID string
	hasRole := func(r spec.MachineRole) bool {
		return slices.ContainsFunc(machines, func(m spec.Machine) bool { return m.Role == r })
	}
	if hasRole(spec.MachineVPN) || hasRole(spec.MachineLB) {
		tmplID = tTemplate + "/" + lxcTemplate
		add(&build{res: plan.Resource{Type: tTemplate, Name: lxcTemplate, Attrs: map[string]string{"storage": p.px.ImageStorage}}})
	}
	if hasRole(spec.MachineManager) {
		u := L.Manager.Image
		fn := imageFileName(u)
		b := &build{url: u, filename: fn, content: "import", volid: p.px.ImageStorage + ":import/" + fn}
		b.res = plan.Resource{Type: tImage, Name: b.volid, Attrs: map[string]string{"url": u}}
		add(b)
		debianImage = b.volid
	}
	if hasRole(spec.MachineControlPlane) || hasRole(spec.MachineWorker) {
		id := strings.TrimSpace(string(art("talos/schematic.id")))
		if id != "" {
			ver := "v" + strings.TrimPrefix(L.Cluster.TalosVersion, "v")
			u := fmt.Sprintf("https://factory.talos.dev/image/%s/%s/nocloud-amd64.qcow2", id, ver)
			fn := fmt.Sprintf("talos-%s-%s-nocloud-amd64.qcow2", ver, id[:min(12, len(id))])
			b := &build{url: u, filename: fn, content: "import", volid: p.px.ImageStorage + ":import/" + fn}
			b.res = plan.Resource{Type: tImage, Name: b.volid, Attrs: map[string]string{"url": u}}
			add(b)
			talosImage = b.volid
		}
	}

	// Guests.
	var cpStarts []string
	for _, m := range machines {
		if m.Role == spec.MachineControlPlane {
			cpStarts = append(cpStarts, tStart+"/"+m.Name)
		}
	}
	for _, m := range machines {
		var gb *build
		var err error
		switch m.Kind {
		case spec.KindLXC:
			gb, err = p.lxcBuild(m, tmplID, netDeps)
		case spec.KindVM:
			var user []byte
			var img string
			if m.Role == spec.MachineManager {
				user, img = art("cloud-init/manager/user-data"), debianImage
			} else {
				user, img = art("talos/"+m.Name+".yaml"), talosImage
			}
			sn := &build{m: m, data: user}
			sn.filename = fmt.Sprintf("%s.%s.yaml", m.Name, short(user))
			sn.volid = p.px.ImageStorage + ":snippets/" + sn.filename
			sn.res = plan.Resource{Type: tSnippet, Name: m.Name, Attrs: map[string]string{"file": sn.filename}}
			add(sn)
			gb, err = p.vmBuild(m, img, sn.volid, netDeps)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add(gb)
		// start and install carry the guest's identity (vmid, source), so
		// that a replaced guest is started and installed again.
		ident := map[string]string{"vmid": gb.res.Attrs["vmid"], "source": gb.res.Attrs["source"]}
		st := &build{m: m, res: plan.Resource{Type: tStart, Name: m.Name, Attrs: map[string]string{"status": "running"},
			DependsOn: []string{gb.res.ID()}}}
		maps.Copy(st.res.Attrs, ident)
		if m.Role == spec.MachineWorker {
			st.res.DependsOn = append(st.res.DependsOn, cpStarts...)
		}
		add(st)
		if m.Kind == spec.KindLXC {
			ib, err := p.installBuild(m, byPath)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ib.res.DependsOn = []string{st.res.ID()}
			maps.Copy(ib.res.Attrs, ident)
			add(ib)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p.mu.Lock()
	p.want = want
	p.mu.Unlock()
	out := make([]plan.Resource, 0, len(order))
	for _, id := range order {
		out = append(out, want[id].res)
	}
	return out, nil
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// imageFileName is the import file name of a cloud image URL: its base
// name, with an extension Proxmox accepts for import content.
func imageFileName(u string) string {
	base := path.Base(u)
	if pu, err := url.Parse(u); err == nil {
		base = path.Base(pu.Path)
	}
	if !strings.HasSuffix(base, ".qcow2") && !strings.HasSuffix(base, ".raw") && !strings.HasSuffix(base, ".vmdk") {
		base = strings.TrimSuffix(base, path.Ext(base)) + ".qcow2"
	}
	return base
}

// groupRules is the zone policy of DESIGN.md as one security group per
// guest role.
func (p *Provider) groupRules(ipsets map[string][]string) map[string][]fwRule {
	L := p.lab
	ref := func(k string) string {
		if _, ok := ipsets[k]; !ok {
			return ""
		}
		return "+" + p.fwName(k)
	}
	c := p.ownComment()
	g := map[string][]fwRule{}
	g[p.fwName("vpn")] = []fwRule{{Type: "in", Action: "ACCEPT", Proto: "udp", Dport: strconv.Itoa(L.VPN.ListenPort), Comment: c + " wireguard"}}
	var lb []fwRule
	for _, f := range L.LoadBalancer.Frontends {
		proto := f.Protocol
		if proto == "" {
			proto = "tcp"
		}
		lb = append(lb, fwRule{Type: "in", Action: "ACCEPT", Proto: proto, Dport: strconv.Itoa(f.Port), Comment: c + " frontend " + f.Name})
	}
	if s := ref("apps"); s != "" {
		lb = append(lb, fwRule{Type: "in", Action: "ACCEPT", Source: s, Proto: "tcp", Dport: strconv.Itoa(L.LoadBalancer.AdminPort), Comment: c + " lb admin"})
		// The LB's only outbound traffic: to the backends on the apps
		// network (its egress policy is DROP: no Internet, no admin).
		lb = append(lb, fwRule{Type: "out", Action: "ACCEPT", Dest: s, Comment: c + " to backends"})
	}
	g[p.fwName("lb")] = lb
	admin, vpn := ref("admin"), ref("vpn")
	var mgr, cp, wk []fwRule
	if vpn != "" {
		mgr = append(mgr, fwRule{Type: "in", Action: "ACCEPT", Source: vpn, Proto: "tcp", Dport: "22", Comment: c + " ssh from vpn"})
		cp = append(cp, fwRule{Type: "in", Action: "ACCEPT", Source: vpn, Proto: "tcp", Dport: "6443,50000", Comment: c + " apis from vpn"})
		wk = append(wk, fwRule{Type: "in", Action: "ACCEPT", Source: vpn, Proto: "tcp", Dport: "50000", Comment: c + " talos api from vpn"})
	}
	if admin != "" {
		for _, rs := range []*[]fwRule{&mgr, &cp, &wk} {
			*rs = append(*rs, fwRule{Type: "in", Action: "ACCEPT", Source: admin, Comment: c + " admin network"})
		}
	}
	if s := ref("lb"); s != "" {
		var ports []string
		for _, f := range L.LoadBalancer.Frontends {
			if f.Backends.Role == string(spec.MachineWorker) && f.Backends.Port > 0 {
				ports = append(ports, strconv.Itoa(f.Backends.Port))
			}
		}
		slices.Sort(ports)
		if ports = slices.Compact(ports); len(ports) > 0 {
			wk = append(wk, fwRule{Type: "in", Action: "ACCEPT", Source: s, Proto: "tcp", Dport: strings.Join(ports, ","), Comment: c + " ingress from lb"})
		}
	}
	g[p.fwName("mgr")] = mgr
	g[p.fwName("cp")] = cp
	g[p.fwName("wk")] = wk
	return g
}

func (p *Provider) groupOf(m spec.Machine) string {
	switch m.Role {
	case spec.MachineVPN:
		return p.fwName("vpn")
	case spec.MachineLB:
		return p.fwName("lb")
	case spec.MachineManager:
		return p.fwName("mgr")
	case spec.MachineControlPlane:
		return p.fwName("cp")
	default:
		return p.fwName("wk")
	}
}

// guestAttrs are the attributes compared for a guest; config and source
// are hashes also written into the guest's tags, so that a whole lab is
// observed with one call.
func (p *Provider) guestAttrs(m spec.Machine, cfgHash, source string) map[string]string {
	return map[string]string{
		"vmid":   strconv.Itoa(m.VMID),
		"cores":  strconv.Itoa(m.Cores),
		"memory": strconv.FormatUint(m.Memory.MiB(), 10),
		"disk":   strconv.FormatUint(m.Disk.GiB(), 10) + "G",
		"tags":   strings.Join(p.ownTags(), ";"),
		"config": cfgHash,
		"source": short([]byte(source))[:8],
	}
}

func (p *Provider) tagList(cfgHash, srcHash string) string {
	return strings.Join(append(p.ownTags(), "hl-c-"+cfgHash, "hl-s-"+srcHash), ";")
}

func (p *Provider) lxcBuild(m spec.Machine, tmplID string, netDeps []string) (*build, error) {
	cfg := url.Values{
		"hostname": {m.Name},
		"cores":    {strconv.Itoa(m.Cores)},
		"memory":   {strconv.FormatUint(m.Memory.MiB(), 10)},
		"swap":     {"0"},
		"onboot":   {"1"},
		"features": {"nesting=1"},
		"startup":  {"order=1"},
	}
	gwSet := false
	for i, n := range m.NICs {
		s := fmt.Sprintf("name=eth%d,bridge=%s,hwaddr=%s,firewall=1", i, n.Bridge, strings.ToUpper(n.MAC.String()))
		if n.Address.IsValid() {
			s += fmt.Sprintf(",ip=%s/%d", n.Address, n.Prefix.Bits())
			if !gwSet && n.Gateway.IsValid() && n.Gateway != n.Address {
				s += ",gw=" + n.Gateway.String()
				gwSet = true
			}
		}
		if n.VLAN != 0 {
			s += ",tag=" + strconv.Itoa(n.VLAN)
		}
		cfg.Set(fmt.Sprintf("net%d", i), s)
	}
	b := &build{m: m, config: cfg, group: p.groupOf(m), tun: m.Role == spec.MachineVPN}
	b.fwOpts = url.Values{"enable": {"1"}, "policy_in": {"DROP"}, "policy_out": {"ACCEPT"}}
	if m.Role == spec.MachineLB {
		b.fwOpts.Set("policy_out", "DROP")
	}
	source := "vztmpl:" + lxcTemplate
	h := guestHash(cfg, b.fwOpts, b.group, b.tun)
	b.create = url.Values{
		"unprivileged": {"1"},
		"rootfs":       {fmt.Sprintf("%s:%d", p.px.Storage, m.Disk.GiB())},
		"ostype":       {"debian"},
		"tags":         {p.tagList(h, short([]byte(source))[:8])},
	}
	deps := slices.Clone(netDeps)
	if tmplID != "" {
		deps = append(deps, tmplID)
	}
	deps = append(deps, tGroup+"/"+b.group)
	b.res = plan.Resource{Type: tLXC, Name: m.Name, Attrs: p.guestAttrs(m, h, source),
		ForceNew: []string{"vmid", "source"}, DependsOn: deps, HoldsData: true}
	return b, nil
}

func (p *Provider) vmBuild(m spec.Machine, image, snippet string, netDeps []string) (*build, error) {
	if image == "" {
		return nil, fmt.Errorf("vm %s: no image to build it from (is talos/schematic.id rendered?)", m.Name)
	}
	cfg := url.Values{
		"name":     {m.Name},
		"cores":    {strconv.Itoa(m.Cores)},
		"memory":   {strconv.FormatUint(m.Memory.MiB(), 10)},
		"ostype":   {"l26"},
		"scsihw":   {"virtio-scsi-single"},
		"agent":    {"enabled=1"},
		"onboot":   {"1"},
		"boot":     {"order=scsi0"},
		"serial0":  {"socket"},
		"cicustom": {"user=" + snippet},
	}
	source := "debian-cloud"
	if m.Role == spec.MachineManager {
		cfg.Set("startup", "order=2")
	} else {
		source = "talos-nocloud"
		cfg.Set("cpu", "host")
		cfg.Set("balloon", "0")
		if m.Role == spec.MachineControlPlane {
			cfg.Set("startup", "order=3")
		} else {
			cfg.Set("startup", "order=4")
		}
	}
	gwSet := false
	for i, n := range m.NICs {
		s := fmt.Sprintf("virtio=%s,bridge=%s,firewall=1", strings.ToUpper(n.MAC.String()), n.Bridge)
		if n.VLAN != 0 {
			s += ",tag=" + strconv.Itoa(n.VLAN)
		}
		cfg.Set(fmt.Sprintf("net%d", i), s)
		if n.Address.IsValid() {
			ip := fmt.Sprintf("ip=%s/%d", n.Address, n.Prefix.Bits())
			if !gwSet && n.Role == spec.RoleAdmin && n.Gateway.IsValid() {
				ip += ",gw=" + n.Gateway.String()
				gwSet = true
			}
			cfg.Set(fmt.Sprintf("ipconfig%d", i), ip)
		}
	}
	b := &build{m: m, config: cfg, group: p.groupOf(m)}
	b.fwOpts = url.Values{"enable": {"1"}, "policy_in": {"DROP"}, "policy_out": {"ACCEPT"}}
	h := guestHash(cfg, b.fwOpts, b.group, false)
	b.create = url.Values{
		"scsi0": {fmt.Sprintf("%s:0,import-from=%s,discard=on,iothread=1", p.px.Storage, image)},
		"ide2":  {p.px.Storage + ":cloudinit"},
		"tags":  {p.tagList(h, short([]byte(source))[:8])},
	}
	deps := slices.Clone(netDeps)
	deps = append(deps, tImage+"/"+image, tSnippet+"/"+m.Name, tGroup+"/"+b.group)
	b.res = plan.Resource{Type: tVM, Name: m.Name, Attrs: p.guestAttrs(m, h, source),
		ForceNew: []string{"vmid", "source"}, DependsOn: deps, HoldsData: true}
	return b, nil
}

// installBuild is what goes into a container: our binary, its rendered
// config and a systemd unit.
func (p *Provider) installBuild(m spec.Machine, byPath map[string][]byte) (*build, error) {
	bin := p.opts.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the homelab binary to install into %s: %w", m.Name, err)
		}
		bin = exe
	}
	binData, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading the homelab binary to install into %s: %w", m.Name, err)
	}
	if !isLinuxAMD64(binData) {
		return nil, withHint(fmt.Errorf("%s is not a linux/amd64 executable, and the containers need one", bin),
			"build one with GOOS=linux GOARCH=amd64 go build -o homelab-linux ./cmd/homelab and pass its path (--binary)")
	}
	var files []installFile
	var svc, exec string
	switch m.Role {
	case spec.MachineLB:
		cfg, ok := byPath["lb/lb.yaml"]
		if !ok {
			return nil, fmt.Errorf("rendered artifact lb/lb.yaml is missing (render the lab first)")
		}
		files = append(files, installFile{path: "/etc/homelab/lb.yaml", mode: "0600", data: cfg})
		svc, exec = "homelab-lb", "/usr/local/bin/homelab lb run --config /etc/homelab/lb.yaml"
	case spec.MachineVPN:
		cfg, ok := byPath["wireguard/server.conf"]
		if !ok {
			return nil, fmt.Errorf("rendered artifact wireguard/server.conf is missing (render the lab first)")
		}
		files = append(files, installFile{path: "/etc/homelab/wireguard/server.conf", mode: "0600", data: cfg})
		svc, exec = "homelab-vpn", "/usr/local/bin/homelab vpn run --config /etc/homelab/wireguard/server.conf"
	default:
		return nil, fmt.Errorf("nothing to install into %s", m.Name)
	}
	unit := fmt.Sprintf("[Unit]\nDescription=homelab %s (lab %s)\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart=%s\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n", m.Role, p.lab.Name, exec)
	files = append(files, installFile{path: "/etc/systemd/system/" + svc + ".service", mode: "0644", data: []byte(unit)})
	files = append([]installFile{{path: "/usr/local/bin/homelab", mode: "0755", src: bin}}, files...)
	h := sha256.New()
	h.Write(binData)
	for _, f := range files {
		fmt.Fprintf(h, "%s %s %d\n", f.path, f.mode, len(f.data))
		h.Write(f.data)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	b := &build{m: m, files: files, service: svc}
	b.res = plan.Resource{Type: tInstall, Name: m.Name, Attrs: map[string]string{"sha": sum}}
	return b, nil
}

// natRules is the host's NAT for the admin and apps networks' egress: an
// nftables table of its own, so the Proxmox firewall's tables are left
// alone.
func (p *Provider) natRules() []byte {
	var b strings.Builder
	table := "homelab_" + strings.ReplaceAll(tagSafe(p.lab.Name), "-", "_")
	fmt.Fprintf(&b, "# homelab:%s egress NAT for the admin and apps networks\n", p.lab.Name)
	fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\n", table, table)
	fmt.Fprintf(&b, "table ip %s {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n", table)
	var bridges []string
	for _, n := range p.lab.Networks {
		if n.Role != spec.RoleWAN {
			bridges = append(bridges, `"`+n.Bridge+`"`)
		}
	}
	for _, n := range p.lab.Networks {
		if n.Role == spec.RoleWAN {
			continue
		}
		fmt.Fprintf(&b, "\t\tip saddr %s oifname != { %s } masquerade\n", n.CIDR.Masked(), strings.Join(bridges, ", "))
	}
	b.WriteString("\t}\n}\n")
	return []byte(b.String())
}

// isLinuxAMD64 reports whether b starts with the ELF header of a 64-bit
// little-endian x86-64 executable.
func isLinuxAMD64(b []byte) bool {
	return len(b) >= 20 && string(b[:4]) == "\x7fELF" && b[4] == 2 && b[5] == 1 && b[18] == 62 && b[19] == 0
}

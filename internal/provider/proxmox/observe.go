package proxmox

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider/proxmox/pveapi"
	"github.com/homelab-dev/homelab/internal/spec"
)

// volume is one entry of the image storage's content.
type volume struct {
	Volid   string `json:"volid"`
	Content string `json:"content"`
	Size    int64  `json:"size"`
}

// clusterGuest is one guest as /cluster/resources lists it.
type clusterGuest struct {
	VMID     int     `json:"vmid"`
	Name     string  `json:"name"`
	Node     string  `json:"node"`
	Type     string  `json:"type"`
	Status   string  `json:"status"`
	Tags     string  `json:"tags"`
	MaxCPU   float64 `json:"maxcpu"`
	MaxMem   int64   `json:"maxmem"`
	MaxDisk  int64   `json:"maxdisk"`
	Template int     `json:"template"`
}

type netIface struct {
	Iface    string `json:"iface"`
	Type     string `json:"type"`
	CIDR     string `json:"cidr"`
	Address  string `json:"address"`
	Netmask  string `json:"netmask"`
	Comments string `json:"comments"`
	Active   int    `json:"active"`
	Auto     int    `json:"autostart"`
	VLAN     int    `json:"bridge_vlan_aware"`
}

func splitTags(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
}

// Observe lists what exists and carries the lab's marks. It makes a fixed
// number of API calls whatever the number of guests: one for all guests,
// one for the node network, one for the image storage, and two plus one
// per owned IP set or security group for the firewall.
func (p *Provider) Observe(ctx context.Context) ([]plan.Resource, error) {
	var out []plan.Resource
	L := p.lab
	own := "homelab-" + tagSafe(L.Name)

	// Guests.
	var guests []clusterGuest
	if err := p.get(ctx, "/cluster/resources", url.Values{"type": {"vm"}}, &guests); err != nil {
		return nil, p.explain(err, "listing guests")
	}
	vmids := map[int]guestInfo{}
	seen := map[string]bool{}
	var running []clusterGuest
	var diskSizes map[int]int64
	slices.SortFunc(guests, func(a, b clusterGuest) int { return a.VMID - b.VMID })
	for _, g := range guests {
		tags := splitTags(g.Tags)
		owned := slices.Contains(tags, "homelab") && slices.Contains(tags, own) && g.Template == 0
		vmids[g.VMID] = guestInfo{Name: g.Name, Node: g.Node, Type: g.Type, Owned: owned}
		if !owned {
			continue
		}
		typ := tVM
		if g.Type == "lxc" {
			typ = tLXC
		}
		name := g.Name
		if seen[typ+"/"+name] {
			// A second guest of the same name (an interrupted create
			// elsewhere): listed under its VMID so the plan removes it.
			name = fmt.Sprintf("%s#%d", name, g.VMID)
		}
		seen[typ+"/"+name] = true
		var cfg, src string
		var ownTags []string
		for _, t := range tags {
			switch {
			case strings.HasPrefix(t, "hl-c-"):
				cfg = strings.TrimPrefix(t, "hl-c-")
			case strings.HasPrefix(t, "hl-s-"):
				src = strings.TrimPrefix(t, "hl-s-")
			case t == "homelab" || t == own:
				ownTags = append(ownTags, t)
			}
		}
		slices.Sort(ownTags)
		if len(ownTags) == 2 && ownTags[0] != "homelab" {
			ownTags[0], ownTags[1] = ownTags[1], ownTags[0]
		}
		if g.MaxDisk == 0 {
			// Proxmox reports the boot disk's size in maxdisk; when an
			// API does not, the guest storage's listing says it (one call
			// for all guests), or else the guest's config.
			size, err := p.diskSizeFallback(ctx, g, &diskSizes)
			if err != nil {
				return nil, p.explain(err, "reading the disk size of guest "+strconv.Itoa(g.VMID))
			}
			g.MaxDisk = size
		}
		attrs := map[string]string{
			"vmid":   strconv.Itoa(g.VMID),
			"cores":  strconv.Itoa(int(g.MaxCPU)),
			"memory": strconv.FormatInt(g.MaxMem/(1<<20), 10),
			"disk":   strconv.FormatInt((g.MaxDisk+(1<<30)-1)>>30, 10) + "G",
			"tags":   strings.Join(ownTags, ";"),
			"config": cfg,
			"source": src,
			"node":   g.Node,
			"kind":   g.Type,
		}
		if p.opts.Refresh && !strings.Contains(name, "#") {
			if b := p.wantedGuest(typ, name); b != nil {
				h, err := p.liveGuestHash(ctx, g, b)
				if err != nil {
					return nil, p.explain(err, "reading guest "+strconv.Itoa(g.VMID))
				}
				attrs["config"] = h
			}
		}
		out = append(out, plan.Resource{Type: typ, Name: name, Attrs: attrs})
		if !strings.Contains(name, "#") {
			out = append(out, plan.Resource{Type: tStart, Name: name, Attrs: map[string]string{
				"status": g.Status, "vmid": strconv.Itoa(g.VMID), "source": src, "node": g.Node, "kind": g.Type}})
			if g.Type == "lxc" && g.Status == "running" {
				running = append(running, g)
			}
		}
	}
	p.mu.Lock()
	p.vmids = vmids
	p.mu.Unlock()

	// Node network.
	var ifaces []netIface
	if err := p.get(ctx, p.nodePath("/network"), nil, &ifaces); err != nil {
		return nil, p.explain(err, "listing the network of node "+p.px.Node)
	}
	byName := map[string]netIface{}
	for _, i := range ifaces {
		byName[i.Iface] = i
	}
	var active []string
	anyOwned := false
	for _, n := range L.Networks {
		i, ok := byName[n.Bridge]
		if n.Role == spec.RoleWAN {
			if !ok {
				return nil, withHint(fmt.Errorf("bridge %s of network %s does not exist on node %s", n.Bridge, n.Name, p.px.Node),
					"the wan network uses the host's uplink bridge (vmbr0 on a fresh install); create it under System > Network or set the wan network's bridge to the one that exists (`ip -br link show type bridge` on the host)")
			}
			continue
		}
		if ok && strings.TrimSpace(i.Comments) != p.ownComment() {
			return nil, withHint(fmt.Errorf("bridge %s for network %s exists on node %s but is not lab %s's (its comment is not %q)", n.Bridge, n.Name, p.px.Node, L.Name, p.ownComment()),
				fmt.Sprintf("homelab never takes over an interface it did not make: choose another bridge name for network %s, or, if the bridge is really this lab's, set its comment to %s", n.Name, p.ownComment()))
		}
	}
	for _, i := range ifaces {
		if i.Type != "bridge" || strings.TrimSpace(i.Comments) != p.ownComment() {
			continue
		}
		anyOwned = true
		cidr := i.CIDR
		if cidr == "" && i.Address != "" {
			cidr = i.Address
		}
		out = append(out, plan.Resource{Type: tBridge, Name: i.Iface, Attrs: map[string]string{
			"cidr": cidr, "comments": strings.TrimSpace(i.Comments), "autostart": strconv.Itoa(i.Auto), "vlan_aware": strconv.Itoa(i.VLAN)}})
		if i.Active == 1 {
			active = append(active, i.Iface+"="+cidr)
		}
	}
	if anyOwned {
		slices.Sort(active)
		out = append(out, plan.Resource{Type: tNetApply, Name: p.px.Node, Attrs: map[string]string{"active": strings.Join(active, " ")}})
	}

	// Image storage: images, the template and the snippets.
	var vols []volume
	if err := p.get(ctx, p.nodePath("/storage/"+pveapi.Seg(p.px.ImageStorage)+"/content"), nil, &vols); err != nil {
		return nil, p.explain(err, "listing storage "+p.px.ImageStorage)
	}
	p.mu.Lock()
	p.volumes = vols
	p.mu.Unlock()
	names := map[string]bool{}
	for _, m := range L.Machines() {
		names[m.Name] = true
	}
	mgrImage := p.px.ImageStorage + ":import/" + imageFileName(L.Manager.Image)
	tmplSeen := false
	for _, v := range vols {
		_, file, _ := strings.Cut(v.Volid, ":")
		switch {
		case v.Content == "import" && p.isLabImage(v.Volid, file, mgrImage):
			out = append(out, plan.Resource{Type: tImage, Name: v.Volid, Attrs: map[string]string{"url": p.imageURL(v.Volid)}})
		case v.Content == "vztmpl" && strings.HasPrefix(file, "vztmpl/"+lxcTemplate+"_") && !tmplSeen && p.templateObserved():
			tmplSeen = true
			out = append(out, plan.Resource{Type: tTemplate, Name: lxcTemplate, Attrs: map[string]string{"storage": p.px.ImageStorage, "volid": v.Volid}})
		case v.Content == "snippets" && strings.HasPrefix(file, "snippets/"):
			fn := strings.TrimPrefix(file, "snippets/")
			parts := strings.Split(fn, ".")
			if len(parts) == 3 && parts[2] == "yaml" && names[parts[0]] {
				out = append(out, plan.Resource{Type: tSnippet, Name: parts[0], Attrs: map[string]string{"file": fn}})
			}
		}
	}

	// Firewall.
	fw, err := p.observeFirewall(ctx)
	if err != nil {
		return nil, err
	}
	out = append(out, fw...)
	linkObserved(out)

	// Through SSH: the host NAT and what is installed in running containers.
	if p.shell != nil {
		if anyOwned {
			if data, err := p.shell.Run(ctx, nil, "cat", p.natFile()); err == nil {
				out = append(out, plan.Resource{Type: tHostNAT, Name: p.px.Node, Attrs: map[string]string{"sha": short(data)}})
			}
		}
		for _, g := range running {
			if data, err := p.shell.Run(ctx, nil, "pct", "exec", strconv.Itoa(g.VMID), "--", "cat", installedMarker); err == nil {
				out = append(out, plan.Resource{Type: tInstall, Name: g.Name, Attrs: parseMarker(data)})
			}
		}
	}
	return out, nil
}

// isLabImage reports whether an import volume is one of the lab's images:
// one Desired asked for, or, when Desired was not called (destroy), one
// named as the lab names its images. Images of other versions are left
// alone on apply: they are shared.
func (p *Provider) isLabImage(volid, file, mgrImage string) bool {
	p.mu.Lock()
	want := p.want
	p.mu.Unlock()
	if want != nil {
		_, ok := want[tImage+"/"+volid]
		return ok
	}
	return p.opts.PurgeImages && labImageName(volid, file, mgrImage)
}

func labImageName(volid, file, mgrImage string) bool {
	return volid == mgrImage || strings.HasPrefix(file, "import/talos-") && strings.HasSuffix(file, "-nocloud-amd64.qcow2")
}

// imageURL is the URL the lab downloads a volume from, when it is one of
// the lab's desired images.
func (p *Provider) imageURL(volid string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.want[tImage+"/"+volid]; ok {
		return b.url
	}
	return ""
}

func (p *Provider) observeFirewall(ctx context.Context) ([]plan.Resource, error) {
	var out []plan.Resource
	prefix := p.fwName("")
	var opts struct {
		Enable int `json:"enable"`
	}
	if err := p.get(ctx, "/cluster/firewall/options", nil, &opts); err != nil {
		return nil, p.explain(err, "reading the datacenter firewall options")
	}
	if opts.Enable != 1 {
		p.warnOnce("fw-off", "the datacenter firewall is off, so the lab's guest firewall rules have no effect; enable it under Datacenter > Firewall > Options once you have checked that the host's own rules let you in")
	}
	var sets []struct {
		Name    string `json:"name"`
		Comment string `json:"comment"`
	}
	if err := p.get(ctx, "/cluster/firewall/ipset", nil, &sets); err != nil {
		return nil, p.explain(err, "listing firewall IP sets")
	}
	for _, s := range sets {
		if !strings.HasPrefix(s.Name, prefix) || strings.TrimSpace(s.Comment) != p.ownComment() {
			continue
		}
		var entries []struct {
			CIDR string `json:"cidr"`
		}
		if err := p.get(ctx, "/cluster/firewall/ipset/"+pveapi.Seg(s.Name), nil, &entries); err != nil {
			return nil, p.explain(err, "reading IP set "+s.Name)
		}
		var cs []string
		for _, e := range entries {
			cs = append(cs, e.CIDR)
		}
		slices.Sort(cs)
		out = append(out, plan.Resource{Type: tIPSet, Name: s.Name, Attrs: map[string]string{"cidrs": strings.Join(cs, " "), "comment": strings.TrimSpace(s.Comment)}})
	}
	var groups []struct {
		Group   string `json:"group"`
		Comment string `json:"comment"`
	}
	if err := p.get(ctx, "/cluster/firewall/groups", nil, &groups); err != nil {
		return nil, p.explain(err, "listing firewall security groups")
	}
	for _, g := range groups {
		if !strings.HasPrefix(g.Group, prefix) || strings.TrimSpace(g.Comment) != p.ownComment() {
			continue
		}
		rs, err := p.groupRulesLive(ctx, g.Group)
		if err != nil {
			return nil, err
		}
		out = append(out, plan.Resource{Type: tGroup, Name: g.Group, Attrs: map[string]string{"rules": rulesAttr(rs), "comment": strings.TrimSpace(g.Comment)}})
	}
	return out, nil
}

type liveRule struct {
	Pos     int    `json:"pos"`
	Type    string `json:"type"`
	Action  string `json:"action"`
	Source  string `json:"source"`
	Dest    string `json:"dest"`
	Proto   string `json:"proto"`
	Dport   string `json:"dport"`
	Comment string `json:"comment"`
}

func (p *Provider) groupRulesLive(ctx context.Context, group string) ([]fwRule, error) {
	var live []liveRule
	if err := p.get(ctx, "/cluster/firewall/groups/"+pveapi.Seg(group), nil, &live); err != nil {
		return nil, p.explain(err, "reading security group "+group)
	}
	slices.SortFunc(live, func(a, b liveRule) int { return a.Pos - b.Pos })
	var rs []fwRule
	for _, l := range live {
		rs = append(rs, fwRule{Type: l.Type, Action: l.Action, Source: l.Source, Dest: l.Dest, Proto: l.Proto, Dport: l.Dport, Comment: l.Comment})
	}
	return rs, nil
}

// Kept lists what destroy leaves behind: the downloaded images and the
// container template (shared, slow to download again), unless the
// provider was made with PurgeImages. Observe does not report them when
// Desired was not called (destroy) and PurgeImages is off, so a destroy
// plan leaves them alone.
func (p *Provider) Kept(ctx context.Context) ([]string, error) {
	if p.opts.PurgeImages {
		return nil, nil
	}
	var vols []volume
	if err := p.get(ctx, p.nodePath("/storage/"+pveapi.Seg(p.px.ImageStorage)+"/content"), nil, &vols); err != nil {
		return nil, p.explain(err, "listing storage "+p.px.ImageStorage)
	}
	mgrImage := p.px.ImageStorage + ":import/" + imageFileName(p.lab.Manager.Image)
	var ids []string
	for _, v := range vols {
		_, file, _ := strings.Cut(v.Volid, ":")
		switch {
		case v.Content == "import" && labImageName(v.Volid, file, mgrImage):
			ids = append(ids, tImage+"/"+v.Volid)
		case v.Content == "vztmpl" && strings.HasPrefix(file, "vztmpl/"+lxcTemplate+"_"):
			ids = append(ids, tTemplate+"/"+lxcTemplate)
		}
	}
	return ids, nil
}

// templateObserved reports whether Observe lists the container template:
// on apply (Desired was called), or on a destroy that purges images.
func (p *Provider) templateObserved() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want != nil || p.opts.PurgeImages
}

// Status prints the lab's guests with their state.
func (p *Provider) Status(ctx context.Context, w io.Writer) error {
	obs, err := p.Observe(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "proxmox node %s (%s)\n", p.px.Node, p.px.Endpoint)
	for _, r := range obs {
		if r.Type == tStart {
			fmt.Fprintf(w, "  %-8s %-24s vmid %-6s %s\n", r.Attrs["kind"], r.Name, r.Attrs["vmid"], r.Attrs["status"])
		}
	}
	return nil
}

// bootDiskSize reads the size of a guest's boot disk (scsi0 or rootfs)
// from its config.
func (p *Provider) bootDiskSize(ctx context.Context, g clusterGuest) (int64, error) {
	var cfg map[string]any
	if err := p.get(ctx, "/nodes/"+pveapi.Seg(g.Node)+guestPath(g.Type)+strconv.Itoa(g.VMID)+"/config", nil, &cfg); err != nil {
		return 0, err
	}
	key := "scsi0"
	if g.Type == "lxc" {
		key = "rootfs"
	}
	v, _ := cfg[key].(string)
	for _, opt := range strings.Split(v, ",") {
		if s, ok := strings.CutPrefix(opt, "size="); ok {
			return parseDiskSize(s), nil
		}
	}
	return 0, nil
}

// parseDiskSize reads Proxmox's disk-size format (2G, 512M, 1T, bytes).
func parseDiskSize(s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "T"):
		mult, s = 1<<40, strings.TrimSuffix(s, "T")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return int64(f * float64(mult))
}

// linkObserved gives observed resources the dependencies a destroy must
// respect: containers and VMs go before the bridges, firewall groups and
// snippets they use, a guest's start (stop) and install before the guest,
// groups before the IP sets their rules name.
func linkObserved(rs []plan.Resource) {
	byType := map[string][]string{}
	for _, r := range rs {
		byType[r.Type] = append(byType[r.Type], r.ID())
	}
	for i := range rs {
		r := &rs[i]
		switch r.Type {
		case tStart:
			for _, t := range []string{tVM, tLXC} {
				if slices.Contains(byType[t], t+"/"+r.Name) {
					r.DependsOn = append(r.DependsOn, t+"/"+r.Name)
				}
			}
		case tInstall:
			r.DependsOn = append(r.DependsOn, tStart+"/"+r.Name)
		case tVM, tLXC:
			r.DependsOn = append(r.DependsOn, byType[tNetApply]...)
			r.DependsOn = append(r.DependsOn, byType[tGroup]...)
			if slices.Contains(byType[tSnippet], tSnippet+"/"+r.Name) {
				r.DependsOn = append(r.DependsOn, tSnippet+"/"+r.Name)
			}
		case tNetApply:
			r.DependsOn = append(r.DependsOn, byType[tBridge]...)
		case tHostNAT:
			r.DependsOn = append(r.DependsOn, byType[tNetApply]...)
		case tGroup:
			r.DependsOn = append(r.DependsOn, byType[tIPSet]...)
		}
	}
}

// parseMarker reads the installed marker: key=value lines (sha, vmid,
// source) written by install.
func parseMarker(data []byte) map[string]string {
	attrs := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			attrs[k] = v
		}
	}
	return attrs
}

func (p *Provider) wantedGuest(typ, name string) *build {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want[typ+"/"+name]
}

// liveGuestHash computes a guest's configuration hash from what Proxmox
// reports: the keys homelab sets, its firewall options and its group.
func (p *Provider) liveGuestHash(ctx context.Context, g clusterGuest, b *build) (string, error) {
	gp := "/nodes/" + pveapi.Seg(g.Node) + guestPath(g.Type) + strconv.Itoa(g.VMID)
	var cfg map[string]any
	if err := p.get(ctx, gp+"/config", nil, &cfg); err != nil {
		return "", err
	}
	str := func(v any) string {
		switch x := v.(type) {
		case nil:
			return ""
		case string:
			return x
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64)
		default:
			return fmt.Sprint(x)
		}
	}
	live := url.Values{}
	for k := range b.config {
		if v := str(cfg[k]); v != "" {
			live.Set(k, v)
		}
	}
	tun := false
	for k, v := range cfg {
		if strings.HasPrefix(k, "dev") && strings.Contains(str(v), "/dev/net/tun") {
			tun = true
		}
	}
	var fw map[string]any
	if err := p.get(ctx, gp+"/firewall/options", nil, &fw); err != nil {
		return "", err
	}
	opts := url.Values{}
	for k := range b.fwOpts {
		if v := str(fw[k]); v != "" {
			opts.Set(k, v)
		}
	}
	var rules []liveRule
	if err := p.get(ctx, gp+"/firewall/rules", nil, &rules); err != nil {
		return "", err
	}
	group := ""
	for _, r := range rules {
		if r.Type == "group" && r.Action == b.group {
			group = r.Action
		}
	}
	return guestHash(live, opts, group, tun), nil
}

// diskSizeFallback finds a guest's boot disk size when /cluster/resources
// did not report it: from the guest storage's content (listed once, the
// first disk of each guest: vm-<vmid>-disk-0), or from the guest's config.
func (p *Provider) diskSizeFallback(ctx context.Context, g clusterGuest, sizes *map[int]int64) (int64, error) {
	if *sizes == nil {
		*sizes = map[int]int64{}
		var vols []struct {
			Volid string `json:"volid"`
			VMID  int    `json:"vmid"`
			Size  int64  `json:"size"`
		}
		if err := p.get(ctx, p.nodePath("/storage/"+pveapi.Seg(p.px.Storage)+"/content"), nil, &vols); err != nil {
			return 0, err
		}
		for _, v := range vols {
			_, name, _ := strings.Cut(v.Volid, ":")
			if v.VMID > 0 && (name == fmt.Sprintf("vm-%d-disk-0", v.VMID) || name == fmt.Sprintf("subvol-%d-disk-0", v.VMID)) {
				(*sizes)[v.VMID] = v.Size
			}
		}
	}
	if s, ok := (*sizes)[g.VMID]; ok && s > 0 && g.Node == p.px.Node {
		return s, nil
	}
	return p.bootDiskSize(ctx, g)
}

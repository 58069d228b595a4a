package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider/proxmox/pveapi"
)

// installedMarker holds, in each container, the hash of what was installed.
const installedMarker = "/etc/homelab/installed.sha"

// Create makes r.
func (p *Provider) Create(ctx context.Context, r plan.Resource) error {
	return p.wrap(p.create(ctx, r, nil), "creating", r)
}

// Update changes observed into desired.
func (p *Provider) Update(ctx context.Context, desired, observed plan.Resource) error {
	return p.wrap(p.create(ctx, desired, &observed), "updating", desired)
}

// Delete removes r, which Observe reported as the lab's.
func (p *Provider) Delete(ctx context.Context, r plan.Resource) error {
	return p.wrap(p.delete(ctx, r), "deleting", r)
}

// wrap names the step in an error, explains API refusals and marks
// errors worth retrying for apply.
func (p *Provider) wrap(err error, verb string, r plan.Resource) error {
	if err == nil {
		return nil
	}
	e := p.explain(err, verb+" "+r.ID())
	if pveapi.IsTemporary(err) && ctxAlive(err) {
		return apply.Transient(e)
	}
	return e
}

func ctxAlive(err error) bool {
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func (p *Provider) wanted(r plan.Resource) (*build, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.want[r.ID()]
	if !ok {
		return nil, fmt.Errorf("%s is not part of the desired lab (call Desired before apply)", r.ID())
	}
	return b, nil
}

func (p *Provider) needShell(what string) error {
	if p.shell != nil {
		return nil
	}
	return withHint(fmt.Errorf("%s needs SSH to the Proxmox host, and host.proxmox.ssh is not set", what),
		"the API has no call for it; add host.proxmox.ssh (user, address, keyFile, knownHosts) as docs/proxmox.md shows")
}

func (p *Provider) create(ctx context.Context, r plan.Resource, obs *plan.Resource) error {
	b, err := p.wanted(r)
	if err != nil {
		return err
	}
	switch r.Type {
	case tBridge:
		if obs != nil {
			if err := p.guardBridge(ctx, b.iface); err != nil {
				return err
			}
		}
		form := url.Values{"type": {"bridge"}, "cidr": {b.cidr}, "autostart": {"1"}, "comments": {p.ownComment()}}
		if b.cidr == "" {
			form.Del("cidr")
		}
		if b.vlanAware {
			form.Set("bridge_vlan_aware", "1")
		}
		if obs == nil {
			f := url.Values{"iface": {b.iface}}
			for k, v := range form {
				f[k] = v
			}
			err := p.post(ctx, p.nodePath("/network"), f, nil)
			if !pveapi.IsExists(err) {
				return err
			}
			// Made by an interrupted attempt: check it is ours, then set it.
			var i netIface
			if err := p.get(ctx, p.nodePath("/network/"+pveapi.Seg(b.iface)), nil, &i); err != nil {
				return err
			}
			if strings.TrimSpace(i.Comments) != p.ownComment() {
				return fmt.Errorf("bridge %s already exists and is not lab %s's", b.iface, p.lab.Name)
			}
			if err := p.guardBridge(ctx, b.iface); err != nil {
				return err
			}
		}
		return p.put(ctx, p.nodePath("/network/"+pveapi.Seg(b.iface)), form, nil)
	case tNetApply:
		apply.Report(ctx, 0.1, "reloading the node network")
		return p.task(ctx, http.MethodPut, p.nodePath("/network"), nil)
	case tHostNAT:
		return p.applyNAT(ctx, b)
	case tIPSet:
		return p.applyIPSet(ctx, b, obs != nil)
	case tGroup:
		return p.applyGroup(ctx, b, obs != nil)
	case tImage:
		return p.download(ctx, b)
	case tTemplate:
		return p.downloadTemplate(ctx)
	case tSnippet:
		return p.writeSnippet(ctx, b, obs)
	case tLXC, tVM:
		return p.applyGuest(ctx, b, obs)
	case tStart:
		return p.start(ctx, b)
	case tInstall:
		return p.install(ctx, b)
	}
	return fmt.Errorf("unknown resource type %q", r.Type)
}

func (p *Provider) delete(ctx context.Context, r plan.Resource) error {
	switch r.Type {
	case tBridge:
		if err := p.guardBridge(ctx, r.Name); err != nil {
			return err
		}
		if err := p.del(ctx, p.nodePath("/network/"+pveapi.Seg(r.Name)), nil, nil); err != nil && !pveapi.IsStatus(err, 404) {
			return err
		}
		return p.task(ctx, http.MethodPut, p.nodePath("/network"), nil)
	case tNetApply:
		// The bridges' deletes reload the network themselves.
		return nil
	case tHostNAT:
		if err := p.needShell("removing the host NAT"); err != nil {
			return err
		}
		unit := p.natUnit()
		for _, argv := range [][]string{
			{"systemctl", "disable", "--now", unit},
			{"nft", "delete", "table", "ip", p.natTable()},
			{"rm", "-f", "/etc/systemd/system/" + unit},
			{"rm", "-f", p.natFile()},
			{"rm", "-f", p.sysctlFile()},
			{"systemctl", "daemon-reload"},
		} {
			// Best effort: a table or unit already gone is fine.
			_, _ = p.shell.Run(ctx, nil, argv...)
		}
		return nil
	case tIPSet:
		var entries []struct {
			CIDR string `json:"cidr"`
		}
		base := "/cluster/firewall/ipset/" + pveapi.Seg(r.Name)
		if err := p.get(ctx, base, nil, &entries); err != nil {
			return err
		}
		for _, e := range entries {
			if err := p.del(ctx, base+"/"+pveapi.Seg(e.CIDR), nil, nil); err != nil {
				return err
			}
		}
		return p.del(ctx, base, nil, nil)
	case tGroup:
		if err := p.clearGroup(ctx, r.Name); err != nil {
			return err
		}
		return p.del(ctx, "/cluster/firewall/groups/"+pveapi.Seg(r.Name), nil, nil)
	case tImage, tTemplate:
		if !p.opts.PurgeImages {
			// Shared and slow to download again: only deleted when asked
			// (destroy --purge-images); Kept lists them for the caller.
			fmt.Fprintf(p.log, "keeping %s (destroy --purge-images deletes it)\n", r.ID())
			return nil
		}
		if r.Type == tTemplate {
			return p.deleteVolume(ctx, r.Attrs["volid"])
		}
		return p.deleteVolume(ctx, r.Name)
	case tSnippet:
		return p.deleteVolume(ctx, p.px.ImageStorage+":snippets/"+r.Attrs["file"])
	case tLXC, tVM:
		return p.deleteGuest(ctx, r)
	case tStart:
		vmid, _ := strconv.Atoi(r.Attrs["vmid"])
		if r.Attrs["status"] != "running" || vmid == 0 {
			return nil
		}
		return p.stopGuest(ctx, r.Attrs["node"], r.Attrs["kind"], vmid)
	case tInstall:
		// Removed with its container.
		return nil
	}
	return fmt.Errorf("unknown resource type %q", r.Type)
}

// guardBridge refuses to touch the interface that carries the host's
// management address: changing it would cut the connection homelab (and
// the user) reaches the host by.
func (p *Provider) guardBridge(ctx context.Context, iface string) error {
	var i struct {
		CIDR    string `json:"cidr"`
		Address string `json:"address"`
	}
	if err := p.get(ctx, p.nodePath("/network/"+pveapi.Seg(iface)), nil, &i); err != nil {
		if pveapi.IsStatus(err, 404) || pveapi.IsStatus(err, 400) || pveapi.IsStatus(err, 500) {
			return nil
		}
		return err
	}
	for _, s := range []string{i.CIDR, i.Address} {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(strings.Split(s, "/")[0])
		if err != nil {
			continue
		}
		if slices.Contains(p.mgmt, a) {
			return withHint(fmt.Errorf("refusing to change bridge %s: it carries the host's management address %s (the API endpoint)", iface, a),
				"the admin and apps networks need bridges of their own; give them other bridge names in networks[].bridge")
		}
	}
	return nil
}

func (p *Provider) natTable() string {
	return "homelab_" + strings.ReplaceAll(tagSafe(p.lab.Name), "-", "_")
}
func (p *Provider) natFile() string { return "/etc/homelab/" + tagSafe(p.lab.Name) + "-nat.nft" }
func (p *Provider) natUnit() string { return "homelab-" + tagSafe(p.lab.Name) + "-nat.service" }
func (p *Provider) sysctlFile() string {
	return "/etc/sysctl.d/90-homelab-" + tagSafe(p.lab.Name) + ".conf"
}

func (p *Provider) applyNAT(ctx context.Context, b *build) error {
	if err := p.needShell("the host's egress NAT for the admin and apps networks"); err != nil {
		return err
	}
	unit := fmt.Sprintf("[Unit]\nDescription=homelab %s: egress NAT for the lab networks\nAfter=network.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/nft -f %s\nExecStop=/usr/sbin/nft delete table ip %s\n\n[Install]\nWantedBy=multi-user.target\n",
		p.lab.Name, p.natFile(), p.natTable())
	steps := []struct {
		stdin []byte
		argv  []string
	}{
		{[]byte("net.ipv4.ip_forward = 1\n"), []string{"install", "-D", "-m", "0644", "/dev/stdin", p.sysctlFile()}},
		{nil, []string{"sysctl", "-p", p.sysctlFile()}},
		{b.data, []string{"install", "-D", "-m", "0644", "/dev/stdin", p.natFile()}},
		{[]byte(unit), []string{"install", "-D", "-m", "0644", "/dev/stdin", "/etc/systemd/system/" + p.natUnit()}},
		{nil, []string{"systemctl", "daemon-reload"}},
		{nil, []string{"systemctl", "enable", "--now", p.natUnit()}},
		{nil, []string{"nft", "-f", p.natFile()}},
	}
	for _, s := range steps {
		if _, err := p.shell.Run(ctx, s.stdin, s.argv...); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) applyIPSet(ctx context.Context, b *build, exists bool) error {
	base := "/cluster/firewall/ipset/" + pveapi.Seg(b.res.Name)
	have := map[string]bool{}
	if !exists {
		err := p.post(ctx, "/cluster/firewall/ipset", url.Values{"name": {b.res.Name}, "comment": {p.ownComment()}}, nil)
		if pveapi.IsExists(err) {
			// Made by an interrupted attempt: reconcile its entries.
			return p.applyIPSet(ctx, b, true)
		}
		if err != nil {
			return err
		}
	} else {
		var entries []struct {
			CIDR string `json:"cidr"`
		}
		if err := p.get(ctx, base, nil, &entries); err != nil {
			return err
		}
		for _, e := range entries {
			have[e.CIDR] = true
			if !slices.Contains(b.cidrs, e.CIDR) {
				if err := p.del(ctx, base+"/"+pveapi.Seg(e.CIDR), nil, nil); err != nil {
					return err
				}
			}
		}
	}
	for _, c := range b.cidrs {
		if have[c] {
			continue
		}
		if err := p.post(ctx, base, url.Values{"cidr": {c}}, nil); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) clearGroup(ctx context.Context, group string) error {
	rs, err := p.groupRulesLive(ctx, group)
	if err != nil {
		return err
	}
	for i := len(rs) - 1; i >= 0; i-- {
		if err := p.del(ctx, "/cluster/firewall/groups/"+pveapi.Seg(group)+"/"+strconv.Itoa(i), nil, nil); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) applyGroup(ctx context.Context, b *build, exists bool) error {
	g := b.res.Name
	if !exists {
		err := p.post(ctx, "/cluster/firewall/groups", url.Values{"group": {g}, "comment": {p.ownComment()}}, nil)
		if pveapi.IsExists(err) {
			return p.applyGroup(ctx, b, true)
		}
		if err != nil {
			return err
		}
	} else if err := p.clearGroup(ctx, g); err != nil {
		return err
	}
	for i, r := range b.rules {
		f := r.form()
		f.Set("pos", strconv.Itoa(i))
		if err := p.post(ctx, "/cluster/firewall/groups/"+pveapi.Seg(g), f, nil); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) listVolumes(ctx context.Context, content string) ([]volume, error) {
	var vols []volume
	err := p.get(ctx, p.nodePath("/storage/"+pveapi.Seg(p.px.ImageStorage)+"/content"), url.Values{"content": {content}}, &vols)
	return vols, err
}

func (p *Provider) download(ctx context.Context, b *build) error {
	// A download that a dropped connection interrupted on our side may
	// have finished on the host.
	vols, err := p.listVolumes(ctx, b.content)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.Volid == b.volid {
			return nil
		}
	}
	apply.Report(ctx, 0.05, "downloading "+b.filename)
	return p.task(ctx, http.MethodPost, p.nodePath("/storage/"+pveapi.Seg(p.px.ImageStorage)+"/download-url"),
		url.Values{"content": {b.content}, "filename": {b.filename}, "url": {b.url}})
}

func (p *Provider) downloadTemplate(ctx context.Context) error {
	if v, err := p.templateVolid(ctx); err == nil && v != "" {
		return nil
	}
	var apl []struct {
		Template string `json:"template"`
		Package  string `json:"package"`
		Version  string `json:"version"`
		Section  string `json:"section"`
	}
	if err := p.get(ctx, p.nodePath("/aplinfo"), nil, &apl); err != nil {
		return err
	}
	best := ""
	for _, a := range apl {
		if strings.HasPrefix(a.Template, lxcTemplate+"_") && strings.Contains(a.Template, "amd64") && a.Template > best {
			best = a.Template
		}
	}
	if best == "" {
		return withHint(fmt.Errorf("no %s template in the appliance index of node %s", lxcTemplate, p.px.Node),
			"refresh the index on the host with `pveam update`, then run apply again")
	}
	apply.Report(ctx, 0.05, "downloading "+best)
	return p.task(ctx, http.MethodPost, p.nodePath("/aplinfo"), url.Values{"storage": {p.px.ImageStorage}, "template": {best}})
}

func (p *Provider) templateVolid(ctx context.Context) (string, error) {
	vols, err := p.listVolumes(ctx, "vztmpl")
	if err != nil {
		return "", err
	}
	best := ""
	for _, v := range vols {
		_, file, _ := strings.Cut(v.Volid, ":")
		if strings.HasPrefix(file, "vztmpl/"+lxcTemplate+"_") && v.Volid > best {
			best = v.Volid
		}
	}
	return best, nil
}

func (p *Provider) deleteVolume(ctx context.Context, volid string) error {
	if volid == "" {
		return nil
	}
	var upid string
	err := p.del(ctx, p.nodePath("/storage/"+pveapi.Seg(p.px.ImageStorage)+"/content/"+pveapi.Seg(volid)), nil, &upid)
	if err != nil {
		return err
	}
	if upid != "" {
		return p.api.WaitTask(ctx, upid, nil)
	}
	return nil
}

func (p *Provider) writeSnippet(ctx context.Context, b *build, obs *plan.Resource) error {
	if err := p.needShell("writing the cloud-init snippet of " + b.m.Name); err != nil {
		return err
	}
	out, err := p.shell.Run(ctx, nil, "pvesm", "path", b.volid)
	if err != nil {
		return err
	}
	dst := strings.TrimSpace(string(out))
	if !path.IsAbs(dst) {
		return fmt.Errorf("pvesm path %s printed %q, not a file path", b.volid, dst)
	}
	if _, err := p.shell.Run(ctx, b.data, "install", "-D", "-m", "0600", "/dev/stdin", dst); err != nil {
		return err
	}
	if obs != nil && obs.Attrs["file"] != "" && obs.Attrs["file"] != b.filename {
		// The VM's update, which follows, points cicustom at the new file.
		_ = p.deleteVolume(ctx, p.px.ImageStorage+":snippets/"+obs.Attrs["file"])
	}
	return nil
}

func guestPath(kind string) string {
	if kind == "lxc" {
		return "/lxc/"
	}
	return "/qemu/"
}

func (p *Provider) applyGuest(ctx context.Context, b *build, obs *plan.Resource) error {
	m := b.m
	kind := "qemu"
	if b.res.Type == tLXC {
		kind = "lxc"
	}
	gp := p.nodePath(guestPath(kind) + strconv.Itoa(m.VMID))
	exists := obs != nil
	var found map[string]any
	if !exists {
		// After a crash or a dropped connection the guest may exist
		// already; it is only reused if it is ours.
		var cfg map[string]any
		err := p.get(ctx, gp+"/config", nil, &cfg)
		switch {
		case err == nil:
			tags, _ := cfg["tags"].(string)
			name, _ := cfg["name"].(string)
			if kind == "lxc" {
				name, _ = cfg["hostname"].(string)
			}
			ts := splitTags(tags)
			if !slices.Contains(ts, "homelab-"+tagSafe(p.lab.Name)) || name != m.Name {
				return withHint(fmt.Errorf("VMID %d is already used by guest %q, which is not %s of lab %s", m.VMID, name, m.Name, p.lab.Name),
					fmt.Sprintf("homelab never touches guests it does not own: give %s another vmid in the lab file", m.Path))
			}
			exists, found = true, cfg
		case pveapi.IsNotFound(err):
			// does not exist
		default:
			return err
		}
	}
	if !exists {
		form := url.Values{"vmid": {strconv.Itoa(m.VMID)}}
		for k, v := range b.config {
			form[k] = v
		}
		for k, v := range b.create {
			form[k] = v
		}
		if kind == "lxc" {
			tmpl, err := p.templateVolid(ctx)
			if err != nil {
				return err
			}
			if tmpl == "" {
				return fmt.Errorf("the %s template is not in storage %s", lxcTemplate, p.px.ImageStorage)
			}
			form.Set("ostemplate", tmpl)
		}
		apply.Report(ctx, 0.1, "creating "+kind+" "+strconv.Itoa(m.VMID))
		if err := p.task(ctx, http.MethodPost, p.nodePath(guestPath(kind)[:len(guestPath(kind))-1]), form); err != nil {
			return err
		}
		if kind == "qemu" {
			apply.Report(ctx, 0.6, "resizing the disk")
			if err := p.task(ctx, http.MethodPut, gp+"/resize", url.Values{"disk": {"scsi0"}, "size": {fmt.Sprintf("%dG", m.Disk.GiB())}}); err != nil {
				return err
			}
		}
	} else {
		if _, err := p.waitUnlocked(ctx, gp); err != nil {
			return err
		}
		form := url.Values{}
		for k, v := range b.config {
			form[k] = v
		}
		form.Set("tags", b.create.Get("tags"))
		if err := p.put(ctx, gp+"/config", form, nil); err != nil {
			return err
		}
		disk := "scsi0"
		if kind == "lxc" {
			disk = "rootfs"
		}
		grow := obs != nil && obs.Attrs["disk"] != b.res.Attrs["disk"]
		if grow {
			have, want := parseDiskSize(obs.Attrs["disk"]), parseDiskSize(b.res.Attrs["disk"])
			if have > want {
				return withHint(fmt.Errorf("the disk of %s is %s, larger than the %s the lab asks for, and disks only grow", m.Name, obs.Attrs["disk"], b.res.Attrs["disk"]),
					fmt.Sprintf("set the disk size of %s in the lab file to %siB (or more)", m.Path, obs.Attrs["disk"]))
			}
		}
		if found != nil {
			// A guest an interrupted apply created: its disk may not have
			// been resized yet.
			v, _ := found[disk].(string)
			cur := int64(0)
			for _, o := range strings.Split(v, ",") {
				if s, ok := strings.CutPrefix(o, "size="); ok {
					cur = parseDiskSize(s)
				}
			}
			grow = cur < int64(m.Disk.GiB())<<30
		}
		if grow {
			if err := p.task(ctx, http.MethodPut, gp+"/resize", url.Values{"disk": {disk}, "size": {b.res.Attrs["disk"]}}); err != nil {
				return err
			}
		}
	}
	if b.tun {
		if err := p.needShell("passing /dev/net/tun into " + m.Name); err != nil {
			return err
		}
		if _, err := p.shell.Run(ctx, nil, "pct", "set", strconv.Itoa(m.VMID), "--dev0", "/dev/net/tun"); err != nil {
			return err
		}
	}
	apply.Report(ctx, 0.8, "firewall")
	if err := p.put(ctx, gp+"/firewall/options", b.fwOpts, nil); err != nil {
		return err
	}
	var rules []liveRule
	if err := p.get(ctx, gp+"/firewall/rules", nil, &rules); err != nil {
		return err
	}
	for _, r := range rules {
		if r.Type == "group" && r.Action == b.group {
			return nil
		}
	}
	return p.post(ctx, gp+"/firewall/rules", url.Values{"type": {"group"}, "action": {b.group}, "enable": {"1"}, "comment": {p.ownComment()}}, nil)
}

func (p *Provider) deleteGuest(ctx context.Context, r plan.Resource) error {
	vmid, err := strconv.Atoi(r.Attrs["vmid"])
	if err != nil || vmid == 0 {
		return fmt.Errorf("no vmid for %s", r.ID())
	}
	kind, node := r.Attrs["kind"], r.Attrs["node"]
	if node == "" {
		node = p.px.Node
	}
	gp := "/nodes/" + pveapi.Seg(node) + guestPath(kind) + strconv.Itoa(vmid)
	// Check the mark again, right before deleting.
	var cfg map[string]any
	if err := p.get(ctx, gp+"/config", nil, &cfg); err != nil {
		if pveapi.IsNotFound(err) {
			return nil
		}
		return err
	}
	tags, _ := cfg["tags"].(string)
	if ts := splitTags(tags); !slices.Contains(ts, "homelab") || !slices.Contains(ts, "homelab-"+tagSafe(p.lab.Name)) {
		return fmt.Errorf("refusing to delete guest %d: it does not carry the tags of lab %s", vmid, p.lab.Name)
	}
	status, err := p.waitUnlocked(ctx, gp)
	if err != nil {
		return err
	}
	if status == "running" {
		if err := p.stopGuest(ctx, node, kind, vmid); err != nil {
			return err
		}
	}
	return p.task(ctx, http.MethodDelete, gp, url.Values{"purge": {"1"}, "destroy-unreferenced-disks": {"1"}})
}

func (p *Provider) stopGuest(ctx context.Context, node, kind string, vmid int) error {
	if node == "" {
		node = p.px.Node
	}
	return p.task(ctx, http.MethodPost, "/nodes/"+pveapi.Seg(node)+guestPath(kind)+strconv.Itoa(vmid)+"/status/stop", nil)
}

func (p *Provider) start(ctx context.Context, b *build) error {
	m := b.m
	kind := "qemu"
	if m.Kind == "lxc" {
		kind = "lxc"
	}
	gp := p.nodePath(guestPath(kind) + strconv.Itoa(m.VMID))
	var st struct {
		Status string `json:"status"`
	}
	status, err := p.waitUnlocked(ctx, gp)
	if err != nil {
		return err
	}
	if status != "running" {
		apply.Report(ctx, 0.1, "starting")
		if err := p.task(ctx, http.MethodPost, gp+"/status/start", nil); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(p.opts.StartTimeout)
	poll := p.opts.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	for {
		var err error
		if kind == "qemu" {
			apply.Report(ctx, 0.5, "waiting for the guest agent")
			err = p.post(ctx, gp+"/agent/ping", nil, nil)
		} else {
			apply.Report(ctx, 0.5, "waiting for the container")
			err = p.get(ctx, gp+"/status/current", nil, &st)
			if err == nil && st.Status != "running" {
				err = fmt.Errorf("status %s", st.Status)
			}
		}
		if err == nil {
			return nil
		}
		var ae *pveapi.Error
		if errors.As(err, &ae) && (ae.Status == 401 || ae.Status == 403) {
			return err
		}
		if time.Now().After(deadline) {
			what := "its guest agent did not answer"
			if kind == "lxc" {
				what = "it is not running"
			}
			return withHint(fmt.Errorf("%s %s (vmid %d) was started but %s within %s (last error: %v)", kind, m.Name, m.VMID, what, p.opts.StartTimeout, err),
				"open the guest's console in the Proxmox web UI to see why it does not come up; Talos VMs need the qemu-guest-agent extension (cluster.extensions), the manager installs qemu-guest-agent from cloud-init")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		// Boots and locks take seconds: poll less often as the wait goes on.
		poll = min(poll*3/2, p.maxPoll())
	}
}

func (p *Provider) install(ctx context.Context, b *build) error {
	if err := p.needShell("installing homelab into " + b.m.Name); err != nil {
		return err
	}
	vmid := strconv.Itoa(b.m.VMID)
	tmp := "/tmp/homelab-" + tagSafe(p.lab.Name) + "-" + vmid
	run := func(stdin []byte, argv ...string) error {
		_, err := p.shell.Run(ctx, stdin, argv...)
		return err
	}
	push := func(i int, f installFile) error {
		data := f.data
		if f.src != "" {
			d, err := os.ReadFile(f.src)
			if err != nil {
				return fmt.Errorf("reading %s: %w", f.src, err)
			}
			data = d
		}
		hostTmp := fmt.Sprintf("%s-%d", tmp, i)
		if err := run(data, "install", "-D", "-m", "0600", "/dev/stdin", hostTmp); err != nil {
			return err
		}
		defer func() { _ = run(nil, "rm", "-f", hostTmp) }()
		if err := run(nil, "pct", "exec", vmid, "--", "mkdir", "-p", path.Dir(f.path)); err != nil {
			return err
		}
		return run(nil, "pct", "push", vmid, hostTmp, f.path, "--perms", f.mode)
	}
	for i, f := range b.files {
		apply.Report(ctx, float64(i+1)/float64(len(b.files)+2), "pushing "+f.path)
		if err := push(i, f); err != nil {
			return err
		}
	}
	for _, argv := range [][]string{
		{"pct", "exec", vmid, "--", "systemctl", "daemon-reload"},
		{"pct", "exec", vmid, "--", "systemctl", "enable", "--now", b.service},
		{"pct", "exec", vmid, "--", "systemctl", "restart", b.service},
	} {
		if err := run(nil, argv...); err != nil {
			return err
		}
	}
	marker := fmt.Sprintf("sha=%s\nvmid=%s\nsource=%s\n", b.res.Attrs["sha"], b.res.Attrs["vmid"], b.res.Attrs["source"])
	return push(len(b.files), installFile{path: installedMarker, mode: "0644", data: []byte(marker)})
}

// waitUnlocked waits until the guest has no lock: a create, resize or
// backup an earlier (perhaps interrupted) run started finishes on the host
// on its own. It returns the guest's status.
func (p *Provider) waitUnlocked(ctx context.Context, gp string) (string, error) {
	deadline := time.Now().Add(p.opts.StartTimeout)
	poll := p.opts.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	for {
		var st struct {
			Status string `json:"status"`
			Lock   string `json:"lock"`
		}
		if err := p.get(ctx, gp+"/status/current", nil, &st); err != nil {
			return "", err
		}
		if st.Lock == "" {
			return st.Status, nil
		}
		if time.Now().After(deadline) {
			return "", withHint(fmt.Errorf("guest %s is still locked (%s) after %s", path.Base(gp), st.Lock, p.opts.StartTimeout),
				"a task on the host holds the lock: see the node's task list in the web UI; `qm unlock`/`pct unlock` if the task is gone")
		}
		apply.Report(ctx, 0.05, "waiting for lock "+st.Lock)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(poll):
		}
		// Boots and locks take seconds: poll less often as the wait goes on.
		poll = min(poll*3/2, p.maxPoll())
	}
}

// maxPoll caps the interval of long waits: 4×Poll (2s by default).
func (p *Provider) maxPoll() time.Duration {
	if p.opts.Poll > 0 {
		return 4 * p.opts.Poll
	}
	return 2 * time.Second
}

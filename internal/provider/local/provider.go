// Package local builds a lab on this Linux machine with network
// namespaces: a "host" namespace holding one bridge per network with the
// host's nftables ruleset and NAT, one namespace per guest (VPN, load
// balancer, manager, each Talos node) joined to the bridges by veth pairs
// with the spec's addresses and MACs, an "internet" namespace playing the
// home router on the wan side, and a "vpn-client" namespace behind it
// running a WireGuard peer. The daemons (load balancer, WireGuard, Talos
// node stand-ins) run inside their namespaces under a per-lab supervisor.
//
// The Talos nodes are stand-ins (homelab standin): they serve the ports a
// Talos node serves, they are not Talos.
//
// Nothing is kept in a state file: Observe finds the lab's namespaces by
// name, the links and rulesets inside them, and the daemons through the
// supervisor's pid files checked against /proc. Every object carries the
// lab's name: namespaces are <lab>-host, <lab>-internet, <lab>-vpn-client
// and the machine names (<lab>-vpn, <lab>-worker-1, ...).
package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider"
	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Statuser = (*Provider)(nil)
)

// Resource types of the local provider.
const (
	TypeNetns      = "netns"
	TypeBridge     = "bridge"
	TypeLink       = "link"
	TypeNftables   = "nftables"
	TypeSupervisor = "supervisor"
	TypeProcess    = "process"
)

// Options tune the provider. The zero value works.
type Options struct {
	// Executable is the homelab binary that runs the supervisor and the
	// daemons (default: the running program).
	Executable string
	// ReadyTimeout bounds the wait for a daemon to listen on its ports
	// (default 10s).
	ReadyTimeout time.Duration
}

// Provider is the local target of one lab.
type Provider struct {
	lab      *spec.Lab
	stateDir string
	exe      string
	ready    time.Duration
	l        layout

	mu       sync.Mutex
	topo     *Topology
	rulesets map[string]*firewall.Ruleset // by namespace
	procs    map[string]procDef           // by name
	// wanted holds the IDs of the last Desired; nil until Desired is
	// called, which is how destroy runs (everything goes).
	wanted map[string]bool
}

// rootError is returned when the provider lacks the privileges it needs.
type rootError struct{ err error }

func (e *rootError) Error() string { return e.err.Error() }
func (e *rootError) Unwrap() error { return e.err }
func (e *rootError) Hint() string {
	return "the local provider creates network namespaces, links and nftables rules: run it as root (sudo homelab ...) or with CAP_NET_ADMIN and CAP_SYS_ADMIN"
}

// ErrNotRoot is wrapped by the error New returns without the privileges.
var ErrNotRoot = errors.New("the local provider needs root")

// CheckPrivileges reports whether this process may build a local lab:
// CAP_NET_ADMIN (links, nftables) and CAP_SYS_ADMIN (namespaces, mounts).
func CheckPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				caps, perr := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				const netAdmin, sysAdmin = 12, 21
				if perr == nil && caps&(1<<netAdmin) != 0 && caps&(1<<sysAdmin) != 0 {
					return nil
				}
			}
		}
	}
	return &rootError{fmt.Errorf("%w (or CAP_NET_ADMIN and CAP_SYS_ADMIN); running as uid %d", ErrNotRoot, os.Geteuid())}
}

// New returns the local provider of lab, keeping its runtime files in
// <stateDir>/local. It fails with a hint when not run as root.
func New(lab *spec.Lab, stateDir string, opts Options) (*Provider, error) {
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	if lab == nil || lab.Name == "" {
		return nil, errors.New("starting the local provider: no lab")
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("starting the local provider: %w", err)
	}
	p := &Provider{lab: lab, stateDir: abs, exe: opts.Executable, ready: opts.ReadyTimeout,
		l: layout(filepath.Join(abs, "local"))}
	if p.exe == "" {
		if p.exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("starting the local provider: finding the homelab binary: %w", err)
		}
	}
	if p.ready == 0 {
		p.ready = 10 * time.Second
	}
	if p.topo, err = TopologyOf(lab); err != nil {
		return nil, err
	}
	return p, nil
}

// Topology returns the lab's layout.
func (p *Provider) Topology() *Topology {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.topo
}

// Close releases nothing: the provider holds no connection between calls.
func (p *Provider) Close() error { return nil }

func id(typ, name string) string { return typ + "/" + name }

// Desired lists the lab's namespaces, bridges, links, rulesets, the
// supervisor and the daemons.
func (p *Provider) Desired(lab *spec.Lab, arts []render.Artifact) ([]plan.Resource, error) {
	topo, err := TopologyOf(lab)
	if err != nil {
		return nil, err
	}
	rs, err := firewall.Rulesets(lab)
	if err != nil {
		return nil, err
	}
	procs, err := p.daemons(lab, topo, arts)
	if err != nil {
		return nil, fmt.Errorf("planning the local daemons: %w", err)
	}
	p.mu.Lock()
	p.lab, p.topo = lab, topo
	p.rulesets = map[string]*firewall.Ruleset{}
	for place, r := range rs {
		p.rulesets[p.placeNS(topo, place)] = r
	}
	p.procs = map[string]procDef{}
	for _, d := range procs {
		p.procs[d.spec.Name] = d
	}
	p.mu.Unlock()

	var out []plan.Resource
	for _, n := range topo.Namespaces() {
		out = append(out, plan.Resource{Type: TypeNetns, Name: n, Attrs: map[string]string{"forward": boolAttr(routes(topo, n)), "lo": "up"}})
	}
	hostDep := []string{id(TypeNetns, topo.HostNS)}
	for _, b := range p.bridges(topo) {
		out = append(out, plan.Resource{Type: TypeBridge, Name: topo.Lab + "-" + b.Name, Attrs: b.attrs(), DependsOn: hostDep})
	}
	for name, ls := range p.links(topo) {
		deps := []string{id(TypeNetns, ls.EndNS), id(TypeNetns, ls.PeerNS)}
		if ls.Master != "" {
			deps = append(deps, id(TypeBridge, topo.Lab+"-"+ls.Master))
		}
		out = append(out, plan.Resource{Type: TypeLink, Name: name, Attrs: ls.attrs(), DependsOn: deps,
			ForceNew: []string{"end"}})
	}
	for nsName, r := range p.rulesets {
		out = append(out, plan.Resource{Type: TypeNftables, Name: nsName, Attrs: map[string]string{"digest": rulesetDigest(r)},
			DependsOn: []string{id(TypeNetns, nsName)}})
	}
	if len(procs) > 0 {
		out = append(out, plan.Resource{Type: TypeSupervisor, Name: topo.Lab, Attrs: map[string]string{"running": "true"}})
	}
	for _, d := range procs {
		deps := []string{id(TypeSupervisor, topo.Lab), id(TypeNetns, d.spec.NS)}
		for name, ls := range p.links(topo) {
			if ls.PeerNS == d.spec.NS {
				deps = append(deps, id(TypeLink, name))
			}
		}
		if _, ok := p.rulesets[d.spec.NS]; ok {
			deps = append(deps, id(TypeNftables, d.spec.NS))
		}
		if d.spec.NS == topo.ClientNS {
			// The client dials the server over the internet namespace and the wan bridge.
			deps = append(deps, id(TypeProcess, topo.Lab+"-vpn"))
		}
		slices.Sort(deps)
		out = append(out, plan.Resource{Type: TypeProcess, Name: d.spec.Name,
			Attrs: map[string]string{"spec": d.spec.Hash, "running": "true"}, DependsOn: deps})
	}
	slices.SortFunc(out, func(a, b plan.Resource) int { return strings.Compare(a.ID(), b.ID()) })
	wanted := map[string]bool{}
	for _, r := range out {
		wanted[r.ID()] = true
	}
	p.mu.Lock()
	p.wanted = wanted
	p.mu.Unlock()
	return out, nil
}

// goingAway reports whether a namespace is not wanted: deleting it will
// take everything inside with it (links, bridges, tables, processes), and
// the kernel does that in the background, much faster than link by link.
func (p *Provider) goingAway(nsName string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.wanted[id(TypeNetns, nsName)]
}

func boolAttr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// routes reports whether a namespace forwards packets.
func routes(t *Topology, name string) bool {
	return name == t.HostNS || name == t.InternetNS || name == t.Lab+"-vpn"
}

// placeNS maps a firewall place to the namespace that loads its ruleset.
func (p *Provider) placeNS(t *Topology, place string) string {
	switch place {
	case firewall.PlaceHost:
		return t.HostNS
	case firewall.PlaceLB:
		return t.Lab + "-lb"
	case firewall.PlaceVPN:
		return t.Lab + "-vpn"
	}
	return t.Lab + "-" + place
}

func (p *Provider) bridges(t *Topology) []bridgeSpec {
	var out []bridgeSpec
	for _, b := range t.Bridges {
		bs := bridgeSpec{NS: t.HostNS, Name: b.Name, Addr: b.Addr, MAC: spec.StableMAC(t.Lab, t.HostNS+"/"+b.Name, 0)}
		if b.Role == spec.RoleWAN {
			bs.Routes = []route{{Via: t.InternetAddr.Addr()}}
		}
		out = append(out, bs)
	}
	return out
}

// links maps a link resource name (<namespace>/<interface>) to its pair.
func (p *Provider) links(t *Topology) map[string]linkSpec {
	out := map[string]linkSpec{}
	var wanBridge string
	var inner []route
	for _, b := range t.Bridges {
		if b.Role == spec.RoleWAN {
			wanBridge = b.Name
		} else if b.Addr.IsValid() {
			inner = append(inner, route{Dst: b.Addr.Masked(), Via: t.HostWAN.Addr()})
		}
	}
	for _, g := range t.Guests {
		for _, l := range g.Links {
			ls := linkSpec{EndNS: t.HostNS, End: l.Host, Master: l.Bridge, PeerNS: g.NS, Peer: l.Inside, MAC: l.MAC, Addr: l.Addr}
			if g.Gateway.IsValid() && l.Addr.Contains(g.Gateway) {
				ls.Routes = []route{{Via: g.Gateway}}
			}
			out[g.NS+"/"+l.Inside] = ls
		}
	}
	// The internet namespace routes to the lab's inner networks through the
	// host, like any machine on the wan segment could: the host's firewall,
	// not a missing route, is what must keep it out.
	out[t.InternetNS+"/"+internetWANIf] = linkSpec{EndNS: t.HostNS, End: t.internetIfName(), Master: wanBridge,
		PeerNS: t.InternetNS, Peer: internetWANIf, Addr: t.InternetAddr, Routes: inner,
		MAC: spec.StableMAC(t.Lab, t.InternetNS, 0)}
	out[t.ClientNS+"/"+clientUplinkIf] = linkSpec{EndNS: t.InternetNS, End: internetClientIf, EndAddr: t.UplinkInternet,
		EndMAC: spec.StableMAC(t.Lab, t.InternetNS, 1),
		PeerNS: t.ClientNS, Peer: clientUplinkIf, Addr: t.UplinkClient, Routes: []route{{Via: t.UplinkInternet.Addr()}},
		MAC: spec.StableMAC(t.Lab, t.ClientNS, 0)}
	return out
}

// rulesetDigest names a ruleset's content and shape: the hash of its nft
// text (kept in the kernel as the name of an empty marker chain) and the
// rule count and comments of every chain, which the kernel lists back.
func rulesetDigest(r *firewall.Ruleset) string {
	return digestOf(markedRuleset(r))
}

func textHash(r *firewall.Ruleset) string { return specHash([]string{r.Text()}, nil)[:12] }

const markerPrefix = "homelab_"

// markedRuleset adds the marker chain to a copy of the ruleset's table.
func markedRuleset(r *firewall.Ruleset) *firewall.Ruleset {
	h := textHash(r)
	out := &firewall.Ruleset{}
	for _, t := range r.Tables {
		ct := *t
		ct.Chains = append(slices.Clone(t.Chains), &firewall.Chain{Name: markerPrefix + h})
		out.Tables = append(out.Tables, &ct)
	}
	return out
}

func digestOf(r *firewall.Ruleset) string {
	var infos []firewall.TableInfo
	for _, t := range r.Tables {
		ti := firewall.TableInfo{Family: t.Family, Name: t.Name, Rules: map[string]int{}, Comments: map[string][]string{}}
		for _, c := range t.Chains {
			ti.Rules[c.Name] = len(c.Rules)
			for _, rule := range c.Rules {
				ti.Comments[c.Name] = append(ti.Comments[c.Name], rule.Comment)
			}
		}
		infos = append(infos, ti)
	}
	return digestInfos(infos)
}

func digestInfos(infos []firewall.TableInfo) string {
	var parts []string
	for _, ti := range infos {
		for _, c := range slices.Sorted(maps.Keys(ti.Rules)) {
			parts = append(parts, fmt.Sprintf("%s %s %s %d %q", ti.Family, ti.Name, c, ti.Rules[c], ti.Comments[c]))
		}
	}
	slices.Sort(parts)
	return specHash(parts, nil)
}

// Observe lists what exists of the lab: its namespaces, the bridges,
// links and ruleset tables inside them, the supervisor and the daemons.
func (p *Provider) Observe(ctx context.Context) ([]plan.Resource, error) {
	if err := p.checkOwner(); err != nil {
		return nil, err
	}
	t := p.Topology()
	names, err := ns.List(func(n string) bool { return Owns(t.Lab, n) })
	if err != nil {
		return nil, err
	}
	var out []plan.Resource
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
		out = append(out, plan.Resource{Type: TypeNetns, Name: n, Attrs: observeNS(n)})
	}
	hostDep := []string{id(TypeNetns, t.HostNS)}
	if have[t.HostNS] {
		for _, b := range p.bridges(t) {
			if attrs, ok := observeBridge(t.HostNS, b.Name); ok {
				out = append(out, plan.Resource{Type: TypeBridge, Name: t.Lab + "-" + b.Name, Attrs: attrs, DependsOn: hostDep})
			}
		}
	}
	for name, ls := range p.links(t) {
		if !have[ls.EndNS] {
			continue
		}
		if attrs, ok := observeLink(ls); ok {
			deps := []string{id(TypeNetns, ls.EndNS), id(TypeNetns, ls.PeerNS)}
			if ls.Master != "" {
				deps = append(deps, id(TypeBridge, t.Lab+"-"+ls.Master))
			}
			out = append(out, plan.Resource{Type: TypeLink, Name: name, Attrs: attrs, DependsOn: deps})
		}
	}
	table := firewall.TableName(p.lab)
	for _, n := range []string{t.HostNS, t.Lab + "-lb", t.Lab + "-vpn"} {
		if !have[n] {
			continue
		}
		digest, ok, err := observeRuleset(n, table)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, plan.Resource{Type: TypeNftables, Name: n, Attrs: map[string]string{"digest": digest},
				DependsOn: []string{id(TypeNetns, n)}})
		}
	}
	if pid, ok := p.supervisorPID(); ok {
		out = append(out, plan.Resource{Type: TypeSupervisor, Name: t.Lab, Attrs: map[string]string{"running": "true", "pid": strconv.Itoa(pid)}})
	} else if _, err := os.Stat(p.l.supervisorPID()); err == nil {
		out = append(out, plan.Resource{Type: TypeSupervisor, Name: t.Lab, Attrs: map[string]string{"running": "false"}})
	}
	specs, err := p.l.readSpecs()
	if err != nil {
		return nil, fmt.Errorf("reading the daemon specs: %w", err)
	}
	for name, sp := range specs {
		running := "false"
		if st, ok := p.procState(sp); ok && st.PID > 0 {
			running = "true"
		}
		deps := []string{id(TypeSupervisor, t.Lab), id(TypeNetns, sp.NS)}
		out = append(out, plan.Resource{Type: TypeProcess, Name: name,
			Attrs: map[string]string{"spec": sp.Hash, "running": running}, DependsOn: deps})
	}
	slices.SortFunc(out, func(a, b plan.Resource) int { return strings.Compare(a.ID(), b.ID()) })
	return out, ctx.Err()
}

func observeRuleset(nsName, table string) (digest string, found bool, err error) {
	h, err := ns.Open(nsName)
	if err != nil {
		return "", false, nil
	}
	defer h.Close()
	c, err := firewall.Conn(int(h))
	if err != nil {
		return "", false, fmt.Errorf("opening nftables in %s: %w", nsName, err)
	}
	infos, err := firewall.Tables(c)
	if err != nil {
		return "", false, fmt.Errorf("reading nftables in %s: %w", nsName, err)
	}
	var mine []firewall.TableInfo
	for _, ti := range infos {
		if ti.Name == table {
			mine = append(mine, ti)
		}
	}
	if len(mine) == 0 {
		return "", false, nil
	}
	return digestInfos(mine), true, nil
}

// supervisorPID returns the lab's running supervisor.
func (p *Provider) supervisorPID() (int, bool) {
	b, err := os.ReadFile(p.l.supervisorPID())
	if err != nil {
		return 0, false
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, alive(pid, append([]string{p.exe}, supervisorArgs(p.stateDir)...))
}

// procState reads a daemon's state and checks its pid against /proc.
func (p *Provider) procState(sp procSpec) (procState, bool) {
	var st procState
	if err := readJSON(p.l.state(sp.Name), &st); err != nil {
		return st, false
	}
	if st.Hash != sp.Hash || !alive(st.PID, sp.Argv) || !inNamespace(st.PID, sp.NS) {
		st.PID = 0
	}
	return st, true
}

// inNamespace reports whether pid runs in the named namespace (not in an
// older namespace of that name that someone deleted under it).
func inNamespace(pid int, name string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &a) != nil || syscall.Stat(ns.Path(name), &b) != nil {
		return false
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// Create builds one resource. Every create is also a repair: it converges
// whatever part of the object an interrupted run left behind.
func (p *Provider) Create(ctx context.Context, r plan.Resource) error {
	return p.ensure(ctx, r)
}

// Update converges an object that differs from the spec, in place.
func (p *Provider) Update(ctx context.Context, desired, _ plan.Resource) error {
	return p.ensure(ctx, desired)
}

func (p *Provider) ensure(ctx context.Context, r plan.Resource) error {
	t := p.Topology()
	switch r.Type {
	case TypeNetns:
		if r.Name == t.HostNS {
			if err := p.claimOwner(); err != nil {
				return err
			}
		}
		return ensureNS(r.Name, r.Attrs["forward"] == "1")
	case TypeBridge:
		for _, b := range p.bridges(t) {
			if t.Lab+"-"+b.Name == r.Name {
				return ensureBridge(b)
			}
		}
	case TypeLink:
		if ls, ok := p.links(t)[r.Name]; ok {
			return ensureLink(ls)
		}
	case TypeNftables:
		p.mu.Lock()
		rs, ok := p.rulesets[r.Name]
		p.mu.Unlock()
		if ok {
			return loadRuleset(r.Name, rs)
		}
	case TypeSupervisor:
		return p.ensureSupervisor()
	case TypeProcess:
		p.mu.Lock()
		d, ok := p.procs[r.Name]
		p.mu.Unlock()
		if ok {
			return p.ensureProcess(ctx, d)
		}
	}
	return fmt.Errorf("%s is not part of the lab (call Desired first)", r.ID())
}

func loadRuleset(nsName string, rs *firewall.Ruleset) error {
	h, err := ns.Open(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	c, err := firewall.Conn(int(h))
	if err != nil {
		return fmt.Errorf("opening nftables in %s: %w", nsName, err)
	}
	if err := markedRuleset(rs).Load(c); err != nil {
		return fmt.Errorf("in %s: %w", nsName, err)
	}
	return nil
}

// Delete removes one resource; removing what is already gone succeeds.
// Objects inside a namespace that goes away too are left to the
// namespace's deletion (destroy then takes a fraction of the time).
func (p *Provider) Delete(ctx context.Context, r plan.Resource) error {
	t := p.Topology()
	switch r.Type {
	case TypeNetns:
		if err := ns.Delete(r.Name); err != nil {
			return err
		}
		if r.Name == t.HostNS {
			p.releaseOwner()
			// Daemons' configs (private keys) whose daemon never got a
			// spec file, after a crash mid-start, go with the lab.
			_ = os.RemoveAll(p.l.configs())
		}
		return nil
	case TypeBridge:
		if p.goingAway(t.HostNS) {
			return nil
		}
		return deleteBridge(t.HostNS, strings.TrimPrefix(r.Name, t.Lab+"-"))
	case TypeLink:
		end := r.Attrs["end"]
		if end == "" {
			if ls, ok := p.links(t)[r.Name]; ok {
				end = ls.EndNS + "/" + ls.End
			}
		}
		nsName, ifName, ok := strings.Cut(end, "/")
		if !ok {
			return fmt.Errorf("deleting link %s: unknown end", r.Name)
		}
		peerNS, _, _ := strings.Cut(r.Name, "/")
		if p.goingAway(nsName) || p.goingAway(peerNS) {
			return nil // a veth pair dies with either end's namespace
		}
		return deleteLink(nsName, ifName)
	case TypeNftables:
		if p.goingAway(r.Name) {
			return nil
		}
		h, err := ns.Open(r.Name)
		if err != nil {
			return nil // the namespace, and its tables, are gone
		}
		defer h.Close()
		c, err := firewall.Conn(int(h))
		if err != nil {
			return fmt.Errorf("opening nftables in %s: %w", r.Name, err)
		}
		_, err = firewall.DeleteTable(c, firewall.FamilyInet, firewall.TableName(p.lab))
		return err
	case TypeSupervisor:
		return p.stopSupervisor(ctx)
	case TypeProcess:
		return p.stopProcess(ctx, r.Name)
	}
	return fmt.Errorf("deleting %s: unknown resource type", r.ID())
}

// ensureSupervisor starts the lab's supervisor unless it runs.
func (p *Provider) ensureSupervisor() error {
	if _, ok := p.supervisorPID(); ok {
		return nil
	}
	if err := p.l.mkdirs(); err != nil {
		return err
	}
	logf, err := os.OpenFile(p.l.log("supervisor"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening the supervisor log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(p.exe, supervisorArgs(p.stateDir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the supervisor: %w", err)
	}
	// Reap it if it ends while this process still runs; after that init does.
	go func() { _ = cmd.Wait() }()
	if !waitFor(context.Background(), 5*time.Second, func() bool { _, ok := p.supervisorPID(); return ok }) {
		return fmt.Errorf("the supervisor did not start; see %s", p.l.log("supervisor"))
	}
	// A supervisor started over a lab whose daemons exist (its
	// predecessor was killed) restarts them all: wait until they serve.
	specs, err := p.l.readSpecs()
	if err != nil {
		return err
	}
	for _, sp := range specs {
		if !waitFor(context.Background(), p.ready, func() bool {
			st, ok := p.procState(sp)
			return ok && st.PID > 0 && ready(st.PID, sp)
		}) {
			return fmt.Errorf("%s did not become ready under the new supervisor; see %s%s", sp.Name, p.l.log(sp.Name), logTail(p.l.log(sp.Name)))
		}
	}
	return nil
}

func (p *Provider) signalSupervisor() {
	if pid, ok := p.supervisorPID(); ok {
		_ = syscall.Kill(pid, syscall.SIGHUP)
	}
}

func (p *Provider) stopSupervisor(ctx context.Context) error {
	pid, ok := p.supervisorPID()
	if ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if !waitFor(ctx, 3*time.Second, func() bool { return !alive(pid, append([]string{p.exe}, supervisorArgs(p.stateDir)...)) }) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	os.Remove(p.l.supervisorPID())
	return nil
}

// ensureProcess writes the daemon's config files and spec, wakes the
// supervisor and waits until the daemon runs and listens on its ports.
func (p *Provider) ensureProcess(ctx context.Context, d procDef) error {
	if err := p.l.mkdirs(); err != nil {
		return err
	}
	for name, a := range d.files {
		if err := writeFileAtomic(filepath.Join(p.l.config(d.spec.Name), name), a.Data, 0o600); err != nil {
			return fmt.Errorf("writing the config of %s: %w", d.spec.Name, err)
		}
	}
	b, err := jsonMarshal(d.spec)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.l.spec(d.spec.Name), b, 0o600); err != nil {
		return fmt.Errorf("writing the spec of %s: %w", d.spec.Name, err)
	}
	if _, ok := p.supervisorPID(); !ok {
		if err := p.ensureSupervisor(); err != nil {
			return err
		}
	}
	// A daemon still running in a namespace that was deleted and made
	// again is of no use: end it, the supervisor starts it in the new one.
	var old procState
	if readJSON(p.l.state(d.spec.Name), &old) == nil && old.PID > 0 && alive(old.PID, d.spec.Argv) && !inNamespace(old.PID, d.spec.NS) {
		_ = syscall.Kill(old.PID, syscall.SIGKILL)
	}
	p.signalSupervisor()
	var st procState
	ready := waitFor(ctx, p.ready, func() bool {
		var ok bool
		st, ok = p.procState(d.spec)
		return ok && st.PID > 0 && ready(st.PID, d.spec)
	})
	if !ready {
		// Not transient: a daemon that does not come up in this long is
		// crashing or misconfigured, and its log says why.
		return fmt.Errorf("%s did not become ready within %s (restarts %d); see %s%s",
			d.spec.Name, p.ready, st.Restarts, p.l.log(d.spec.Name), logTail(p.l.log(d.spec.Name)))
	}
	return nil
}

func (p *Provider) stopProcess(ctx context.Context, name string) error {
	// The daemon's rendered config may hold private keys: it goes with
	// the daemon, before its spec, so that a destroy killed in between
	// still finds the spec (and this step) the next time; and again at
	// the end, for what the daemon wrote while stopping.
	defer os.RemoveAll(p.l.config(name))
	var sp procSpec
	specErr := readJSON(p.l.spec(name), &sp)
	os.RemoveAll(p.l.config(name))
	os.Remove(p.l.spec(name))
	p.signalSupervisor()
	if specErr != nil {
		return nil
	}
	st, _ := p.procState(sp)
	if st.PID > 0 && p.goingAway(sp.NS) {
		// Its namespace goes too: no need for a graceful stop.
		_ = syscall.Kill(st.PID, syscall.SIGKILL)
	}
	if st.PID > 0 && !waitFor(ctx, 3*time.Second, func() bool { return !alive(st.PID, sp.Argv) }) {
		_ = syscall.Kill(st.PID, syscall.SIGKILL)
	}
	return nil
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// logTail returns the last lines of a daemon's log, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "\n    " + strings.Join(lines, "\n    ")
}

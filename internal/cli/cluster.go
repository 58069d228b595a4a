package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
	"github.com/homelab-dev/homelab/internal/tunnel"
	"github.com/homelab-dev/homelab/internal/vpn"
)

// OperatorPeer is the VPN peer homelab itself dials the admin network as,
// kept with its key pair in the encrypted state folder (vpn-peers). It is
// created on the first plan or apply, before the VPN server's config is
// rendered, so the server knows it from the same apply on.
const OperatorPeer = "homelab-operator"

// vpnLabInfo is what peer management needs of the lab, from the spec and
// the secrets bundle.
func vpnLabInfo(lab *spec.Lab, b *secrets.Bundle) (vpn.LabInfo, error) {
	serverPub, err := vpn.ParseKey(b.WireGuard.Server.Public)
	if err != nil {
		return vpn.LabInfo{}, fmt.Errorf("loading the vpn server key: %w", err)
	}
	admin, ok := lab.NetworkByRole(spec.RoleAdmin)
	if !ok {
		return vpn.LabInfo{}, errors.New("the lab has no admin network")
	}
	info := vpn.LabInfo{
		Tunnel:          lab.VPN.Tunnel,
		Server:          lab.VPNServerAddress(),
		SpecPeers:       map[string]netip.Addr{},
		ServerPublicKey: serverPub,
		Endpoint:        lab.VPN.Endpoint,
		Admin:           admin.CIDR,
		DNS:             lab.VPN.DNS,
	}
	for _, p := range lab.VPN.Peers {
		info.SpecPeers[p.Name] = p.Address
	}
	return info, nil
}

// ensureOperatorPeer returns homelab's own VPN peer, creating it in the
// state folder on first use (created reports that).
func ensureOperatorPeer(store vpn.FileStore, info vpn.LabInfo) (p vpn.StoredPeer, created bool, err error) {
	peers, err := vpn.ListPeers(store)
	if err != nil {
		return vpn.StoredPeer{}, false, err
	}
	if i := slices.IndexFunc(peers, func(p vpn.StoredPeer) bool { return p.Name == OperatorPeer }); i >= 0 {
		return peers[i], false, nil
	}
	if _, ok := info.SpecPeers[OperatorPeer]; ok {
		return vpn.StoredPeer{}, false, withHint(fmt.Errorf("creating homelab's own vpn peer: lab.yaml declares a peer named %s", OperatorPeer),
			"rename that peer in vpn.peers: homelab keeps the name %s for itself", OperatorPeer)
	}
	p, err = vpn.AddPeer(store, info, OperatorPeer, time.Now())
	if err != nil {
		return vpn.StoredPeer{}, false, fmt.Errorf("creating homelab's own vpn peer: %w", err)
	}
	return p, true, nil
}

// serverConfPath is the VPN server's rendered config.
const serverConfPath = "wireguard/server.conf"

// withExtraPeers returns arts with the peers kept in the state folder
// (homelab vpn peer add, and homelab's operator peer) appended to the VPN
// server's config, so that apply hands the server every peer.
func withExtraPeers(arts []render.Artifact, extra []vpn.Peer) ([]render.Artifact, error) {
	if len(extra) == 0 {
		return arts, nil
	}
	i := slices.IndexFunc(arts, func(a render.Artifact) bool { return a.Path == serverConfPath })
	if i < 0 {
		return nil, fmt.Errorf("adding the stored vpn peers: no %s was rendered", serverConfPath)
	}
	var b strings.Builder
	b.Write(arts[i].Data)
	for _, p := range extra {
		fmt.Fprintf(&b, "\n# peer %s (kept in the state folder: homelab vpn peer list)\n[Peer]\nPublicKey = %s\nAllowedIPs = ", p.Name, p.PublicKey)
		for j, a := range p.AllowedIPs {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(a.String())
		}
		b.WriteString("\n")
	}
	out := slices.Clone(arts)
	out[i].Data = []byte(b.String())
	return out, nil
}

// localVPNEndpoint is where the local lab's VPN server listens: its wan
// address inside the lab's namespaces, and the namespace a client on the
// Internet side sends from (the lab's internet namespace, which routes to
// the wan bridge as the home router does).
func localVPNEndpoint(lab *spec.Lab) (endpoint netip.AddrPort, namespace string, err error) {
	topo, err := local.TopologyOf(lab)
	if err != nil {
		return netip.AddrPort{}, "", err
	}
	g, ok := topo.Guest(spec.MachineVPN, 0)
	if !ok {
		return netip.AddrPort{}, "", errors.New("the lab has no vpn container")
	}
	a, ok := g.Machine.Address(spec.RoleWAN)
	if !ok {
		return netip.AddrPort{}, "", errors.New("the vpn container has no wan address")
	}
	return netip.AddrPortFrom(a, uint16(lab.VPN.ListenPort)), topo.InternetNS, nil
}

// reachAdmin returns a dialer to the lab's admin network and a line saying
// how it reaches it. mode is tunnel.ModeAuto (direct when the first
// control plane's Talos API answers, as on the manager VM or with an OS
// VPN up; else the tunnel; always the tunnel for a local lab), ModeDirect
// or ModeTunnel. The tunnel is WireGuard in this process over a
// user-space network stack (no OS interface, no route): with wgConfig, a
// peer config file (wg-quick format, as homelab vpn peer add writes);
// else homelab's operator peer from the state folder. For the local provider the tunnel's UDP socket is
// opened in the lab's internet namespace, where the VPN's wan address is
// reachable (nothing of the lab is reachable from the machine's own
// namespace); everything else stays in this process. Close the dialer when
// done.
//
// homelab apply, upgrade and gitops bootstrap share it.
func reachAdmin(ctx context.Context, lab *spec.Lab, store *secrets.Store, mode tunnel.Mode, wgConfig string) (tunnel.Dialer, string, error) {
	var probe string
	for _, m := range lab.Machines() {
		if m.Role != spec.MachineControlPlane {
			continue
		}
		if a, ok := m.Address(spec.RoleAdmin); ok {
			probe = netip.AddrPortFrom(a, bootstrap.TalosPort).String()
			break
		}
	}
	if probe == "" {
		return nil, "", errors.New("reaching the admin network: the lab has no control plane with an admin address")
	}
	if lab.Host.Provider == spec.ProviderLocal && (mode == tunnel.ModeAuto || mode == "") {
		// Nothing of a local lab is reachable from this machine's own
		// namespace: a direct probe would only send a SYN for the admin
		// address to wherever the default route leads (a real network,
		// where another machine may even answer).
		mode = tunnel.ModeTunnel
	}
	var how string
	open := func(ctx context.Context) (*tunnel.Tunnel, error) {
		cfg, what, err := tunnelConfig(lab, store, wgConfig)
		if err != nil {
			return nil, err
		}
		endpoint := ""
		if len(cfg.Peers) > 0 {
			endpoint = cfg.Peers[0].Endpoint
		}
		if lab.Host.Provider != spec.ProviderLocal {
			how = fmt.Sprintf("through the in-process WireGuard tunnel as %s to %s", what, endpoint)
			return tunnel.Open(ctx, cfg, tunnel.Options{})
		}
		ep, netns, err := localVPNEndpoint(lab)
		if err != nil {
			return nil, err
		}
		if wgConfig == "" {
			for i := range cfg.Peers {
				cfg.Peers[i].Endpoint = ep.String()
			}
			endpoint = ep.String()
		}
		// The sockets keep the namespace they were opened in; the device
		// and its network stack live in this process as usual.
		t, err := tunnel.Open(ctx, cfg, tunnel.Options{Bind: &nsBind{Bind: conn.NewDefaultBind(), ns: netns}})
		if err != nil {
			return nil, err
		}
		how = fmt.Sprintf("through the in-process WireGuard tunnel as %s to %s (UDP from the %s namespace, the Internet side of the local lab)", what, endpoint, netns)
		return t, nil
	}
	d, m, err := tunnel.Pick(ctx, mode, probe, 0, open)
	if err != nil {
		return nil, "", withHint(fmt.Errorf("reaching the admin network: %w", err),
			"run homelab apply first (it starts the VPN and tells it homelab's own peer), pass --wg-config with a peer config (homelab vpn peer add), or run this on the admin network with --via direct")
	}
	if m == tunnel.ModeDirect {
		how = "directly (this machine reaches the admin network)"
		if mode != tunnel.ModeDirect {
			how = fmt.Sprintf("directly (%s answered without a tunnel)", probe)
		}
		return d, how, nil
	}
	if t, ok := d.(*tunnel.Tunnel); ok {
		if err := checkHandshake(ctx, t, probe, handshakeWait); err != nil {
			t.Close()
			return nil, "", withHint(fmt.Errorf("reaching the admin network %s: %w", how, err),
				"check that the VPN container runs (homelab status) and that UDP reaches its endpoint; a peer the server does not know yet is told to it by homelab apply --until infra")
		}
	}
	return d, how, nil
}

// handshakeWait bounds the wait for the VPN server's first handshake.
// checkHandshake starts a new one after 1 s, 2 s more, then every 4 s
// (wireguard-go alone would retry only every 5 s): five attempts fit.
const handshakeWait = 15 * time.Second

// The pauses between checkHandshake's handshake attempts: the first,
// doubled after each attempt up to the last (below wireguard-go's own 5 s
// REKEY_TIMEOUT, so its timer never has to fire).
const (
	handshakeRetryFirst = time.Second
	handshakeRetryMax   = 4 * time.Second
)

// checkHandshake sends traffic through the tunnel (a connection to
// probe, whose outcome does not matter: the node may still be booting)
// and fails when no WireGuard handshake with the server completed within
// wait: then nothing can get through, and saying so beats waiting for
// every node's timeout. While it waits it starts a new handshake after
// 1 s, 2 s, then every 4 s, so that a first initiation lost (the server
// was not listening yet) costs a second, not wireguard-go's 5 s retry.
func checkHandshake(ctx context.Context, t *tunnel.Tunnel, probe string, wait time.Duration) error {
	dctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	dialed := make(chan bool, 1)
	go func() {
		c, err := t.DialContext(dctx, "tcp", probe)
		if err == nil {
			c.Close()
		}
		dialed <- err == nil
	}()
	// The dial outlives an early return only until cancel; wait for it
	// so that nothing still uses the tunnel when the caller closes it.
	defer func() {
		if dialed != nil {
			cancel()
			<-dialed
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	attempts, pause := 1, handshakeRetryFirst
	next := time.Now().Add(pause)
	for {
		hs, err := t.Handshakes()
		if err != nil {
			return err
		}
		for _, ok := range hs {
			if ok {
				return nil
			}
		}
		if !time.Now().Before(next) {
			n, err := t.RetryHandshakes()
			if err != nil {
				return err
			}
			if n > 0 {
				attempts++
			}
			pause = min(2*pause, handshakeRetryMax)
			next = time.Now().Add(pause)
		}
		select {
		case ok := <-dialed:
			dialed = nil
			if ok {
				return nil
			}
			// failed: wait for a handshake until the deadline
		case <-dctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return noHandshakeError(t, wait, attempts)
		case <-tick.C:
		}
	}
}

// noHandshakeError says that no handshake completed within wait, and
// whether anything at all came back from the server.
func noHandshakeError(t *tunnel.Tunnel, wait time.Duration, attempts int) error {
	what := "nothing came back from it"
	if _, rx, err := t.Traffic(); err == nil && rx > 0 {
		what = fmt.Sprintf("it sent %d bytes back, but no handshake completed", rx)
	}
	return fmt.Errorf("no WireGuard handshake with the VPN server within %s (%d handshake initiations sent, %s)", wait, attempts, what)
}

// nsBind opens WireGuard's UDP sockets inside a named network namespace,
// whichever goroutine (re)opens them: wireguard-go brings the device up
// from its own goroutine too, on netstack's up event, so entering the
// namespace around tunnel.Open alone is a race.
type nsBind struct {
	conn.Bind
	ns string
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = ns.Do(b.ns, func() error {
		var err error
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

// tunnelConfig is the WireGuard client config to open the tunnel with,
// and which peer it is.
func tunnelConfig(lab *spec.Lab, store *secrets.Store, wgConfig string) (*vpn.Config, string, error) {
	if wgConfig != "" {
		data, err := os.ReadFile(wgConfig)
		if err != nil {
			return nil, "", fmt.Errorf("reading the wireguard config: %w", err)
		}
		cfg, err := vpn.Parse(data)
		if err != nil {
			return nil, "", fmt.Errorf("reading the wireguard config %s: %w", wgConfig, err)
		}
		return cfg, "the peer of " + wgConfig, nil
	}
	b, err := store.Load()
	if err != nil {
		return nil, "", fmt.Errorf("loading the lab's secrets: %w", err)
	}
	info, err := vpnLabInfo(lab, b)
	if err != nil {
		return nil, "", err
	}
	peers, err := vpn.ListPeers(store)
	if err != nil {
		return nil, "", err
	}
	i := slices.IndexFunc(peers, func(p vpn.StoredPeer) bool { return p.Name == OperatorPeer })
	if i < 0 {
		return nil, "", withHint(fmt.Errorf("the state folder holds no vpn peer %s yet", OperatorPeer),
			"run homelab apply: it creates homelab's own peer and tells the VPN server")
	}
	return vpn.ClientConfig(info, peers[i]), "peer " + OperatorPeer, nil
}

// clusterRun is what the cluster phase leaves for the next: the way to
// the admin network (kept open) and the bootstrap's result.
type clusterRun struct {
	dialer     tunnel.Dialer
	how        string
	res        *bootstrap.Result
	kubeconfig []byte
}

func (c *clusterRun) close() {
	if c != nil && c.dialer != nil {
		_ = c.dialer.Close()
	}
}

// runCluster is apply's cluster phase: reach the admin network, bring
// every Talos node up with its machine config, bootstrap etcd once, store
// the kubeconfig and talosconfig encrypted, and wait for health.
func runCluster(ctx context.Context, w io.Writer, lc *labContext, o clusterOptions) (*clusterRun, error) {
	d, how, err := reachAdmin(ctx, lc.Lab, lc.Store, tunnel.Mode(o.via), o.wgConfig)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "reaching the admin network %s\n", how)
	cl := &clusterRun{dialer: d, how: how}
	flow, err := bootstrap.ForLab(lc.Lab, lc.Bundle, lc.Store)
	if err != nil {
		cl.close()
		return nil, err
	}
	flow.Dialer = d
	flow.NodeTimeout, flow.HealthTimeout = o.nodeTimeout, o.healthTimeout
	flow.Progress = progressLines(w)
	names := make([]string, len(flow.Nodes))
	for i, n := range flow.Nodes {
		names[i] = n.Name
	}
	nodeTimeout := o.nodeTimeout
	if nodeTimeout <= 0 {
		nodeTimeout = bootstrap.DefaultNodeTimeout
	}
	fmt.Fprintf(w, "  waiting for the Talos API of %s (up to %s each)\n", strings.Join(names, ", "), nodeTimeout)
	res, err := flow.Run(ctx)
	if res != nil && res.Health != nil {
		fmt.Fprint(w, res.Health.String())
	}
	if res != nil && res.Standin {
		fmt.Fprintln(w, "note: the nodes are homelab stand-ins (local provider), not Talos: the real Talos client configured and bootstrapped them, but no Kubernetes runs on them")
	}
	if err != nil {
		cl.close()
		return nil, clusterError(err, nodeTimeout)
	}
	cl.res = res
	if cl.kubeconfig, err = lc.Store.GetFile(bootstrap.FileKubeconfig); err != nil {
		cl.close()
		return nil, fmt.Errorf("reading back the kubeconfig: %w", err)
	}
	switch {
	case res.Bootstrapped:
		fmt.Fprintf(w, "etcd: bootstrapped on %s in this run\n", res.BootstrapNode)
	default:
		fmt.Fprintf(w, "etcd: bootstrapped already on %s (not bootstrapped again)\n", res.BootstrapNode)
	}
	if len(res.Applied) > 0 {
		fmt.Fprintf(w, "machine configs applied to %s\n", strings.Join(res.Applied, ", "))
	}
	fmt.Fprintf(w, "kubeconfig and talosconfig: encrypted in %s (homelab kubeconfig prints or merges it)\n", lc.Store.Dir())
	return cl, nil
}

// clusterError adds what to do to a failed bootstrap.
func clusterError(err error, nodeTimeout time.Duration) error {
	var ne *bootstrap.NodeError
	if errors.As(err, &ne) {
		return withHint(err, "%s; if the node is only slow to boot, run homelab apply again or raise --node-timeout (it was %s)", ne.Hint(), nodeTimeout)
	}
	var h hinter
	if errors.As(err, &h) {
		return err
	}
	return withHint(err, "run homelab apply again once the cause is fixed (it resumes: configured nodes and a bootstrapped etcd are left alone); raise --health-timeout if the cluster is only slow")
}

// leavingWorkers names the Talos workers the plan deletes because they
// left the spec: the machine resources (a local namespace, a Proxmox VM)
// named <lab>-worker-N that the spec no longer has.
func leavingWorkers(lab *spec.Lab, p *plan.Plan) []string {
	inSpec := map[string]bool{}
	for _, m := range lab.Machines() {
		inSpec[m.Name] = true
	}
	worker := regexp.MustCompile(`^` + regexp.QuoteMeta(lab.Name) + `-worker-[0-9]+$`)
	var out []string
	for _, s := range p.Steps {
		r := s.Resource()
		if s.Action != plan.Delete || (r.Type != local.TypeNetns && r.Type != "vm") {
			continue
		}
		if worker.MatchString(r.Name) && !inSpec[r.Name] && !slices.Contains(out, r.Name) {
			out = append(out, r.Name)
		}
	}
	slices.Sort(out)
	return out
}

// drainLeaving takes the workers that left the spec out of Kubernetes
// (cordon, evict, delete the Node) before the infra phase deletes their
// machines. A lab never bootstrapped has nothing to drain.
func drainLeaving(ctx context.Context, w io.Writer, lc *labContext, o clusterOptions, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if _, err := lc.Store.GetFile(bootstrap.FileKubeconfig); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(w, "workers leaving the spec: %s (no kubeconfig stored: the cluster was never bootstrapped, nothing to drain)\n", strings.Join(names, ", "))
		return nil
	}
	fmt.Fprintf(w, "workers leaving the spec: %s: draining them out of Kubernetes before their machines go\n", strings.Join(names, ", "))
	d, how, err := reachAdmin(ctx, lc.Lab, lc.Store, tunnel.Mode(o.via), o.wgConfig)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(w, "reaching the admin network %s\n", how)
	flow, err := bootstrap.ForLab(lc.Lab, lc.Bundle, lc.Store)
	if err != nil {
		return err
	}
	flow.Dialer = d
	flow.Progress = progressLines(w)
	if err := flow.RemoveNodes(ctx, names); err != nil {
		return withHint(err, "the machines were left in place; fix the cause (a PodDisruptionBudget that never allows the eviction, an unreachable API) and run homelab apply again")
	}
	return nil
}

// progressLines prints a flow's progress as indented lines; the flow
// reports from one goroutine per node, so writes are serialized.
func progressLines(w io.Writer) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "  "+format+"\n", args...)
	}
}

// parseVia checks a --via flag: how to reach the admin network.
func parseVia(via string) (tunnel.Mode, error) {
	switch m := tunnel.Mode(via); m {
	case "":
		return tunnel.ModeAuto, nil
	case tunnel.ModeAuto, tunnel.ModeDirect, tunnel.ModeTunnel:
		return m, nil
	}
	return "", withHint(fmt.Errorf("--via %q is not a way to reach the admin network", via), "use --via auto, direct or tunnel")
}

package cli

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/tunnel"
	"github.com/homelab-dev/homelab/internal/vpn"
)

// openTestLab loads render's test lab from a fresh folder with its
// secrets, as prepare does.
func openTestLab(t *testing.T) (*spec.Lab, *secrets.Store, *secrets.Bundle) {
	t.Helper()
	dir := labDir(t)
	lab, _, err := spec.Load(filepath.Join(dir, "lab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := secrets.Open(filepath.Join(dir, secrets.StateDirName))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := store.LoadOrCreate(lab)
	if err != nil {
		t.Fatal(err)
	}
	return lab, store, b
}

func TestParsePhase(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want phase
		ok   bool
	}{
		{"infra", phaseInfra, true},
		{"cluster", phaseCluster, true},
		{"gitops", phaseGitops, true},
		{"", 0, false},
		{"Cluster", 0, false},
		{"flux", 0, false},
	} {
		got, err := parsePhase(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parsePhase(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "is not a phase") {
			t.Errorf("parsePhase(%q) error = %q, want it to say it is not a phase", tc.in, err)
		}
	}
}

func TestApplyFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"apply", "--until", "flux"}, `--until "flux" is not a phase`},
		{[]string{"apply", "--via", "ssh"}, `--via "ssh" is not a way`},
		{[]string{"apply", "--node-timeout", "-1s"}, "must not be negative"},
	} {
		code, _, stderr := runCLI(t, append(tc.args, "-f", filepath.Join(t.TempDir(), "lab.yaml"))...)
		if code == 0 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "hint: ") {
			t.Errorf("homelab %s = %d %q, want an error containing %q with a hint", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}

func TestOperatorPeerCreatedOnce(t *testing.T) {
	lab, store, b := openTestLab(t)
	info, err := vpnLabInfo(lab, b)
	if err != nil {
		t.Fatal(err)
	}
	p1, created, err := ensureOperatorPeer(store, info)
	if err != nil || !created {
		t.Fatalf("ensureOperatorPeer (first) = created %v, %v; want a new peer", created, err)
	}
	if p1.Name != OperatorPeer || !info.Tunnel.Contains(p1.Address) || p1.Address == info.Server {
		t.Errorf("operator peer = %s %s, want %s with a free address in %s", p1.Name, p1.Address, OperatorPeer, info.Tunnel)
	}
	p2, created, err := ensureOperatorPeer(store, info)
	if err != nil || created {
		t.Fatalf("ensureOperatorPeer (second) = created %v, %v; want the stored peer", created, err)
	}
	if p2.PublicKey != p1.PublicKey || p2.Address != p1.Address {
		t.Errorf("second call gave another peer (%s) than the first (%s)", p2.Address, p1.Address)
	}

	// A spec peer of the same name is refused, not shadowed.
	info.SpecPeers = map[string]netip.Addr{OperatorPeer: netip.MustParseAddr("10.99.0.50")}
	_, fresh, _ := openTestLab(t)
	_, _, err = ensureOperatorPeer(fresh, info)
	var h hinter
	if err == nil || !strings.Contains(err.Error(), "declares a peer named "+OperatorPeer) || !asHinter(err, &h) {
		t.Errorf("ensureOperatorPeer with a spec peer of the same name = %v, want an error with a hint", err)
	}
}

func asHinter(err error, h *hinter) bool {
	e, ok := err.(hinter)
	if ok {
		*h = e
	}
	return ok
}

func TestWithExtraPeers(t *testing.T) {
	lab, store, b := openTestLab(t)
	arts, err := render.Render(lab, b)
	if err != nil {
		t.Fatal(err)
	}
	same, err := withExtraPeers(arts, nil)
	if err != nil || len(same) != len(arts) {
		t.Fatalf("withExtraPeers(no peers) = %d artifacts, %v", len(same), err)
	}

	info, err := vpnLabInfo(lab, b)
	if err != nil {
		t.Fatal(err)
	}
	op, _, err := ensureOperatorPeer(store, info)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := vpn.ExtraPeers(store)
	if err != nil {
		t.Fatal(err)
	}
	got, err := withExtraPeers(arts, extra)
	if err != nil {
		t.Fatal(err)
	}
	var before, after []byte
	for i := range arts {
		if arts[i].Path == serverConfPath {
			before, after = arts[i].Data, got[i].Data
			if !got[i].Secret {
				t.Error("server.conf lost its Secret mark")
			}
		}
	}
	cfgBefore, err := vpn.Parse(before)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := vpn.Parse(after)
	if err != nil {
		t.Fatalf("server.conf with the stored peers does not parse: %v", err)
	}
	if len(cfg.Peers) != len(cfgBefore.Peers)+1 {
		t.Fatalf("server.conf has %d peers, want %d (the spec's and %s)", len(cfg.Peers), len(cfgBefore.Peers)+1, OperatorPeer)
	}
	last := cfg.Peers[len(cfg.Peers)-1]
	want := netip.PrefixFrom(op.Address, 32)
	if last.PublicKey != op.PublicKey || len(last.AllowedIPs) != 1 || last.AllowedIPs[0] != want {
		t.Errorf("added peer = %v %v, want %v %v", last.PublicKey, last.AllowedIPs, op.PublicKey, want)
	}
	if strings.Contains(string(after), op.PrivateKey.Base64()) {
		t.Error("the operator peer's private key went into the server's config")
	}
	if string(before) == string(after) {
		t.Error("withExtraPeers changed the caller's artifact slice in place or did nothing")
	}

	if _, err := withExtraPeers([]render.Artifact{{Path: "lb/lb.yaml"}}, extra); err == nil {
		t.Error("withExtraPeers without a server.conf succeeded")
	}
}

func TestTunnelConfigUsesOperatorPeer(t *testing.T) {
	lab, store, b := openTestLab(t)
	if _, _, err := tunnelConfig(lab, store, ""); err == nil || !strings.Contains(err.Error(), "no vpn peer "+OperatorPeer) {
		t.Errorf("tunnelConfig before the operator peer exists = %v, want an error naming it", err)
	}
	info, err := vpnLabInfo(lab, b)
	if err != nil {
		t.Fatal(err)
	}
	op, _, err := ensureOperatorPeer(store, info)
	if err != nil {
		t.Fatal(err)
	}
	cfg, what, err := tunnelConfig(lab, store, "")
	if err != nil {
		t.Fatal(err)
	}
	if what != "peer "+OperatorPeer || cfg.Interface.PrivateKey != op.PrivateKey || len(cfg.Peers) != 1 {
		t.Fatalf("tunnelConfig = %q with %d peers, want the operator peer's config", what, len(cfg.Peers))
	}
	admin, _ := lab.NetworkByRole(spec.RoleAdmin)
	if p := cfg.Peers[0]; p.Endpoint != lab.VPN.Endpoint || len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != admin.CIDR.Masked() {
		t.Errorf("server peer = endpoint %q allowed %v, want %q and only the admin network %s", p.Endpoint, p.AllowedIPs, lab.VPN.Endpoint, admin.CIDR)
	}
}

func TestReachAdminModes(t *testing.T) {
	lab, store, _ := openTestLab(t)
	ctx := context.Background()
	d, how, err := reachAdmin(ctx, lab, store, tunnel.ModeDirect, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.(tunnel.Direct); !ok || !strings.Contains(how, "directly") {
		t.Errorf("reachAdmin(direct) = %T %q, want tunnel.Direct", d, how)
	}
	d.Close()

	// Forced tunnel without the operator peer: a clear error and a hint.
	_, _, err = reachAdmin(ctx, lab, store, tunnel.ModeTunnel, "")
	var h hinter
	if err == nil || !strings.Contains(err.Error(), OperatorPeer) || !asHinter(err, &h) {
		t.Errorf("reachAdmin(tunnel) without a peer = %v, want an error naming %s with a hint", err, OperatorPeer)
	}

	// Auto on a local lab: straight to the tunnel (here, the same error
	// about the missing peer), without a direct probe of the admin
	// address from this machine's namespace (it could only go out of the
	// default route).
	if lab.Host.Provider != spec.ProviderLocal {
		t.Fatalf("the test lab's provider is %s, want local", lab.Host.Provider)
	}
	t0 := time.Now()
	_, _, err = reachAdmin(ctx, lab, store, tunnel.ModeAuto, "")
	if err == nil || !strings.Contains(err.Error(), OperatorPeer) {
		t.Errorf("reachAdmin(auto) on a local lab without a peer = %v, want the tunnel's error naming %s", err, OperatorPeer)
	}
	if d := time.Since(t0); d >= tunnel.DefaultProbeTimeout {
		t.Errorf("reachAdmin(auto) on a local lab took %s, as long as a direct probe", d)
	}

	// A missing --wg-config file is named.
	_, _, err = reachAdmin(ctx, lab, store, tunnel.ModeTunnel, filepath.Join(t.TempDir(), "nope.conf"))
	if err == nil || !strings.Contains(err.Error(), "nope.conf") {
		t.Errorf("reachAdmin with a missing --wg-config = %v, want an error naming the file", err)
	}
}

func TestLeavingWorkers(t *testing.T) {
	lab, _, _ := openTestLab(t)
	del := func(typ, name string) plan.Step {
		return plan.Step{ID: typ + "/" + name, Action: plan.Delete, Observed: &plan.Resource{Type: typ, Name: name}}
	}
	w := lab.Name + "-worker-"
	p := &plan.Plan{Steps: []plan.Step{
		del("netns", w+"3"),   // local: a worker's namespace
		del("process", w+"3"), // the same worker's stand-in: counted once
		del("vm", w+"9"),      // proxmox: a worker's VM
		del("vm", w+"1"),      // still in the spec (a replace's delete half): stays
		del("vm", lab.Name+"-cp-2"),
		del("netns", "other-worker-4"),
		{ID: "vm/" + w + "5", Action: plan.Create, Desired: &plan.Resource{Type: "vm", Name: w + "5"}},
	}}
	got := leavingWorkers(lab, p)
	want := []string{w + "3", w + "9"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("leavingWorkers = %v, want %v", got, want)
	}
	if got := leavingWorkers(lab, &plan.Plan{}); len(got) != 0 {
		t.Errorf("leavingWorkers(empty plan) = %v, want none", got)
	}
}

// TestDefaultApplyOptions: what demo applies with is valid and runs
// every phase (a zero clusterOptions once made demo fail on --via).
func TestDefaultApplyOptions(t *testing.T) {
	o := defaultApplyOptions(providerFlags{}, false)
	if err := o.cluster.check(); err != nil {
		t.Errorf("default cluster options: %v", err)
	}
	if p, err := parsePhase(o.until); err != nil || p != phaseGitops {
		t.Errorf("default --until = %q (%v), want every phase", o.until, err)
	}
	if tunnel.Mode(o.cluster.via) != tunnel.ModeAuto {
		t.Errorf("default --via = %q, want auto", o.cluster.via)
	}
}

// TestCheckHandshake: a tunnel whose server answers passes at once, even
// when nothing listens at the probe; one whose server never answers
// fails within the bound, saying there was no handshake.
func TestCheckHandshake(t *testing.T) {
	ctx := context.Background()
	sPriv, sPub, _ := vpn.GenerateKey()
	cPriv, cPub, _ := vpn.GenerateKey()
	server, err := tunnel.Open(ctx, &vpn.Config{
		Interface: vpn.Interface{PrivateKey: sPriv, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}},
		Peers:     []vpn.Peer{{PublicKey: cPub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}},
	}, tunnel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	port, err := server.ListenPort()
	if err != nil {
		t.Fatal(err)
	}
	// As homelab's operator peer, with a persistent keepalive: the first
	// initiation leaves when the tunnel opens.
	client := func(endpoint string) *tunnel.Tunnel {
		c, err := tunnel.Open(ctx, &vpn.Config{
			Interface: vpn.Interface{PrivateKey: cPriv, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}},
			Peers: []vpn.Peer{{PublicKey: sPub, Endpoint: endpoint, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
				PersistentKeepalive: vpn.ClientKeepalive}},
		}, tunnel.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	good := client(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String())
	defer good.Close()
	t0 := time.Now()
	if err := checkHandshake(ctx, good, "10.99.0.1:50000", 5*time.Second); err != nil {
		t.Errorf("checkHandshake with a live server = %v, want nil", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("checkHandshake with a live server took %s, want it to return at the handshake", d)
	}

	// A server that starts listening only after the client's first
	// initiation was lost: checkHandshake's own retry, a second later,
	// gets through well before wireguard-go's 5 s one would.
	late := freeUDPPort(t)
	slow := client(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), late).String())
	defer slow.Close()
	time.Sleep(300 * time.Millisecond) // the first initiation meets a closed port
	lateServer, err := tunnel.Open(ctx, &vpn.Config{
		Interface: vpn.Interface{PrivateKey: sPriv, ListenPort: int(late), Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}},
		Peers:     []vpn.Peer{{PublicKey: cPub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}},
	}, tunnel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lateServer.Close()
	t0 = time.Now()
	if err := checkHandshake(ctx, slow, "10.99.0.1:50000", 10*time.Second); err != nil {
		t.Errorf("checkHandshake with a server that started late = %v, want nil", err)
	}
	if d := time.Since(t0); d < 500*time.Millisecond || d > 3500*time.Millisecond {
		t.Errorf("checkHandshake with a server that started late took %s, want about a second (its own retry, not wireguard-go's 5 s one)", d)
	}

	// A UDP socket that reads nothing back: no handshake ever.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	bad := client(dead.LocalAddr().String())
	defer bad.Close()
	t0 = time.Now()
	err = checkHandshake(ctx, bad, "10.99.0.1:50000", time.Second)
	if err == nil || !strings.Contains(err.Error(), "no WireGuard handshake with the VPN server within 1s") || !strings.Contains(err.Error(), "nothing came back") {
		t.Errorf("checkHandshake with a silent server = %v, want no handshake within 1s and nothing back", err)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("checkHandshake with a silent server took %s, want about its 1s bound", d)
	}
}

// freeUDPPort is a loopback UDP port nothing listens on (it was free a
// moment ago).
func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	return port
}

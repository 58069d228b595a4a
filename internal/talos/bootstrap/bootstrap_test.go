package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/encoder"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	talossecrets "github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	mtype "github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/role"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/standin"
	"github.com/homelab-dev/homelab/internal/tunnel"
	"github.com/homelab-dev/homelab/internal/vpn"
)

// vpnAddr is the server end of the test VPN: the admin network as the
// client sees it. Every stand-in port is forwarded from there.
var vpnAddr = netip.MustParseAddr("10.99.0.1")

// labPKI is a real Talos secrets bundle and its talosconfig admin cert.
type labPKI struct {
	b   *talossecrets.Bundle
	crt []byte
	key []byte
}

var (
	pkiOnce   sync.Once
	pkiShared *labPKI
	pkiErr    error
)

// newPKI returns the test PKI, made once: a Talos bundle takes seconds.
func newPKI(t *testing.T) *labPKI {
	t.Helper()
	pkiOnce.Do(func() { pkiShared, pkiErr = makePKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiShared
}

func makePKI() (*labPKI, error) {
	b, err := talossecrets.NewBundle(talossecrets.NewClock(), config.TalosVersionCurrent)
	if err != nil {
		return nil, err
	}
	admin, err := talossecrets.NewAdminCertificateAndKey(time.Now(), b.Certs.OS, role.MakeSet(role.Admin), time.Hour)
	if err != nil {
		return nil, err
	}
	return &labPKI{b: b, crt: admin.Crt, key: admin.Key}, nil
}

// machineConfig renders a node's machine config with machinery's
// generator from the bundle (Kubernetes version k8s, no leading v). Its
// certSANs hold the VPN address the tests dial.
func machineConfig(t *testing.T, b *talossecrets.Bundle, cp bool, k8s string) []byte {
	t.Helper()
	in, err := generate.NewInput("lab", "https://127.0.0.1:6443", k8s,
		generate.WithSecretsBundle(b),
		generate.WithAdditionalSubjectAltNames([]string{vpnAddr.String()}),
		generate.WithInstallImage("factory.talos.dev/installer/"+testSchematic+":v1.13.9"))
	if err != nil {
		t.Fatal(err)
	}
	typ := mtype.TypeWorker
	if cp {
		typ = mtype.TypeControlPlane
	}
	p, err := in.Config(typ)
	if err != nil {
		t.Fatal(err)
	}
	data, err := p.EncodeBytes(encoder.WithComments(encoder.CommentsDisabled))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// testSchematic is the reference lab's Image Factory schematic ID
// (cluster.extensions: [siderolabs/qemu-guest-agent]), the install image
// of the test configs: computed once with talos.Schematic on
// spec.Reference and pasted, so that a change of talos.Schematic fails
// the upgrade tests (it is also the ID factory.talos.dev answers for that
// schematic).
const testSchematic = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"

// certs issues a stand-in's certificates from the lab's CAs, valid for
// loopback and the VPN address the test dials.
func (p *labPKI) certs(t *testing.T, cp bool) standin.Certs {
	t.Helper()
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), vpnAddr}
	var c standin.Certs
	var err error
	os, k8s := p.b.Certs.OS, p.b.Certs.K8s
	c.TalosCA = os.Crt
	if c.TalosCert, c.TalosKey, err = standin.IssueCerts(os.Crt, os.Key, []string{"node"}, ips); err != nil {
		t.Fatal(err)
	}
	if cp {
		c.KubeCA, c.KubeCAKey = k8s.Crt, k8s.Key
		if c.KubeCert, c.KubeKey, err = standin.IssueCerts(k8s.Crt, k8s.Key, []string{"kubernetes"}, ips); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// callCounter counts the Talos API calls the stand-ins log, per method.
type callCounter struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *callCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *callCounter) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "method" {
			c.mu.Lock()
			c.calls[a.Value.String()]++
			c.mu.Unlock()
		}
		return true
	})
	return nil
}
func (c *callCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *callCounter) WithGroup(string) slog.Handler      { return c }
func (c *callCounter) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls["/machine.MachineService/"+method]
}

// vpnPair is a WireGuard server and client, both in process over loopback
// UDP, as the lab's VPN container and homelab's own tunnel.
func vpnPair(t *testing.T) (server, client *tunnel.Tunnel) {
	t.Helper()
	ctx := context.Background()
	sPriv, sPub, err := vpn.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cPriv, cPub, err := vpn.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	server, err = tunnel.Open(ctx, &vpn.Config{
		Interface: vpn.Interface{PrivateKey: sPriv, Addresses: []netip.Prefix{netip.PrefixFrom(vpnAddr, 24)}},
		Peers:     []vpn.Peer{{PublicKey: cPub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}},
	}, tunnel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	port, err := server.ListenPort()
	if err != nil {
		t.Fatal(err)
	}
	client, err = tunnel.Open(ctx, &vpn.Config{
		Interface: vpn.Interface{PrivateKey: cPriv, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}},
		Peers: []vpn.Peer{{
			PublicKey: sPub, Endpoint: fmt.Sprintf("127.0.0.1:%d", port),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
		}},
	}, tunnel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return server, client
}

// forward relays connections to vpnAddr:port inside the VPN to target.
func forward(t *testing.T, server *tunnel.Tunnel, port uint16, target string) {
	t.Helper()
	l, err := server.ListenTCP(netip.AddrPortFrom(vpnAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	}()
}

// countingDialer records that every connection went through the tunnel.
type countingDialer struct {
	d     Dialer
	dials atomic.Int64
}

func (c *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.dials.Add(1)
	return c.d.DialContext(ctx, network, addr)
}

type lab struct {
	nodes  []*standin.Node
	flow   *Flow
	store  *secrets.Store
	calls  *callCounter
	dialer *countingDialer
	states []string
}

// newLab starts a control plane and two workers in maintenance mode,
// reachable only through the VPN at 10.99.0.1:<port>, with certificates
// of the lab given at start.
func newLab(t *testing.T) *lab { return newLabWith(t, labOpts{givenCerts: true}) }

// labOpts are the variations of the test lab.
type labOpts struct {
	// givenCerts starts the stand-ins with the lab's certificates;
	// without, they start as the local provider starts them, with none:
	// ephemeral ones in maintenance mode, then the applied config's
	// (workers' signed by the control plane's trustd).
	givenCerts bool
	// failUpgrades names a node that comes back unhealthy from upgrades.
	failUpgrades string
}

// rebootDelay is how long a test stand-in "reboots" after an upgrade.
const rebootDelay = 300 * time.Millisecond

// newLabWith starts the test lab with opts.
func newLabWith(t *testing.T, opts labOpts) *lab {
	t.Helper()
	givenCerts := opts.givenCerts
	pki := newPKI(t)
	server, client := vpnPair(t)
	calls := &callCounter{calls: map[string]int{}}
	l := &lab{calls: calls, dialer: &countingDialer{d: client}}
	specs := []struct {
		name string
		role standin.Role
	}{{"lab-cp-1", standin.RoleControlPlane}, {"lab-worker-1", standin.RoleWorker}, {"lab-worker-2", standin.RoleWorker}}
	var nodes []Node
	var trustd []string
	for i, s := range specs {
		cp := s.role == standin.RoleControlPlane
		talosPort, kubePort := uint16(50000+i), uint16(6443+i)
		state := t.TempDir()
		n := &standin.Node{
			Name: s.name, Role: s.role, EphemeralPorts: true, Maintenance: true,
			AdminAddr: netip.MustParseAddr("127.0.0.1"), AppsAddr: netip.MustParseAddr("127.0.0.1"),
			StateDir: state, ClusterName: "lab",
			Endpoint:        fmt.Sprintf("https://%s:%d", vpnAddr, kubePort),
			Logger:          slog.New(calls),
			TrustdEndpoints: trustd,
			RebootDelay:     rebootDelay,
			FailUpgrades:    opts.failUpgrades == s.name,
		}
		if givenCerts {
			n.Certs = pki.certs(t, cp)
		}
		if err := n.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { n.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); n.Close(); <-done })
		a, _ := n.Addr(standin.ServiceTalos)
		forward(t, server, talosPort, a.String())
		if cp {
			k, _ := n.Addr(standin.ServiceKube)
			forward(t, server, kubePort, k.String())
			td, _ := n.Addr(standin.ServiceTrustd)
			trustd = []string{td.String()}
		}
		l.nodes = append(l.nodes, n)
		l.states = append(l.states, state)
		nodes = append(nodes, Node{
			Name: s.name, ControlPlane: cp,
			Addr:   netip.AddrPortFrom(vpnAddr, talosPort).String(),
			Config: machineConfig(t, pki.b, cp, "1.36.3"),
		})
	}
	dir := t.TempDir()
	st, err := secrets.OpenWithIdentity(filepath.Join(dir, "state"), filepath.Join(t.TempDir(), "identity.txt"))
	if err != nil {
		t.Fatal(err)
	}
	l.store = st
	l.flow = &Flow{
		Nodes: nodes, Dialer: l.dialer,
		TalosCA: pki.b.Certs.OS.Crt, AdminCert: pki.crt, AdminKey: pki.key,
		Talosconfig: []byte("context: lab\n"),
		Store:       st,
		NodeTimeout: 20 * time.Second, HealthTimeout: 20 * time.Second,
		PollInterval: 100 * time.Millisecond, CallTimeout: 5 * time.Second,
	}
	return l
}

func TestBootstrapThroughTunnel(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	start := time.Now()
	l.flow.Progress = func(format string, args ...any) {
		t.Logf("%6.2fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	res, err := l.flow.Run(ctx)
	if err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if got, want := strings.Join(res.Applied, ","), "lab-cp-1,lab-worker-1,lab-worker-2"; got != want {
		t.Errorf("first Run applied configs to %q, want %q", got, want)
	}
	if !res.Bootstrapped || res.BootstrapNode != "lab-cp-1" || !res.Standin {
		t.Errorf("first Run: Bootstrapped=%v on %q, Standin=%v; want true on lab-cp-1, true", res.Bootstrapped, res.BootstrapNode, res.Standin)
	}
	// Each stand-in holds exactly the config rendered for it.
	for i, n := range l.flow.Nodes {
		got, err := os.ReadFile(filepath.Join(l.states[i], "config.yaml"))
		if err != nil {
			t.Fatalf("%s: reading its applied config: %v", n.Name, err)
		}
		if !bytes.Equal(got, n.Config) {
			t.Errorf("%s holds config %q, want %q", n.Name, got, n.Config)
		}
	}
	if res.Health == nil || !res.Health.Healthy() {
		t.Fatalf("health report is not healthy:\n%v", res.Health)
	}
	report := res.Health.String()
	for _, want := range []string{
		"homelab stand-ins",
		"ok    kubernetes /readyz",
		"ok    talos lab-worker-2",
		"skip  nodes ready",
		"ok    etcd members        1 member(s) [lab-cp-1]",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("health report lacks %q:\n%s", want, report)
		}
	}
	t.Logf("health report:\n%s", report)

	// kubeconfig stored encrypted: readable through the store, never in
	// the clear on disk.
	kc, err := l.store.GetFile(FileKubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig not in the state folder: %v", err)
	}
	parsed, err := ParseKubeconfig(kc)
	if err != nil {
		t.Fatalf("stored kubeconfig: %v", err)
	}
	if want := "https://10.99.0.1:6443"; parsed.Server != want {
		t.Errorf("kubeconfig server = %q, want %q", parsed.Server, want)
	}
	raw, err := os.ReadFile(filepath.Join(l.store.Dir(), FileKubeconfig+".age"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("client-key-data")) || bytes.Contains(raw, parsed.ClientKey[:40]) {
		t.Error("kubeconfig.age holds the kubeconfig in the clear")
	}
	if tc, err := l.store.GetFile(FileTalosconfig); err != nil || string(tc) != "context: lab\n" {
		t.Errorf("stored talosconfig = %q, %v; want the flow's talosconfig", tc, err)
	}
	if l.dialer.dials.Load() == 0 {
		t.Error("no connection went through the tunnel dialer")
	}

	// A second run changes nothing and never calls Bootstrap again.
	res2, err := l.flow.Run(ctx)
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if len(res2.Applied) != 0 || len(res2.Configured) != 3 || res2.Bootstrapped {
		t.Errorf("second Run: applied %v, configured %v, bootstrapped %v; want none, all three, false", res2.Applied, res2.Configured, res2.Bootstrapped)
	}
	if n := l.calls.count("Bootstrap"); n != 1 {
		t.Errorf("Bootstrap called %d times across two runs, want exactly 1", n)
	}
	if n := l.calls.count("ApplyConfiguration"); n != 3 {
		t.Errorf("ApplyConfiguration called %d times across two runs, want 3 (once per node)", n)
	}
}

// A stand-in already bootstrapped by someone else (etcd holds data) is
// recognised from the AlreadyExists Talos answers, without a failure.
func TestBootstrapAlreadyExists(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	l.flow.SkipHealth = true
	if _, err := l.flow.Run(ctx); err != nil {
		t.Fatal(err)
	}
	called, done, err := l.flow.bootstrapOnce(ctx, &l.flow.Nodes[0])
	if called || !done || err != nil {
		t.Errorf("bootstrapOnce on a bootstrapped node = called %v, done %v, %v; want false, true, nil", called, done, err)
	}
}

func TestNodeNeverAnswers(t *testing.T) {
	l := newLab(t)
	// lab-worker-3 has an address in the VPN where nothing listens.
	l.flow.Nodes = append(l.flow.Nodes, Node{Name: "lab-worker-3", Addr: "10.99.0.1:50099", Config: []byte("x")})
	l.flow.NodeTimeout = 1500 * time.Millisecond
	start := time.Now()
	_, err := l.flow.Run(context.Background())
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Run with a node that never answers succeeded")
	}
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "lab-worker-3" {
		t.Fatalf("Run error = %v, want a NodeError naming lab-worker-3", err)
	}
	for _, want := range []string{"node lab-worker-3", "10.99.0.1:50099", "no answer from its talos API within 1.5s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "lab-worker-1") {
		t.Errorf("error %q blames a node that answered", err)
	}
	if elapsed > 8*time.Second {
		t.Errorf("Run took %s with a 1.5s node timeout", elapsed)
	}
}

func TestUnhealthyIsBounded(t *testing.T) {
	l := newLab(t)
	l.flow.SkipHealth = true
	if _, err := l.flow.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	kc, _ := l.store.GetFile(FileKubeconfig)
	// Point the kubeconfig at a port where no API server listens.
	bad := bytes.Replace(kc, []byte("https://10.99.0.1:6443"), []byte("https://10.99.0.1:7443"), 1)
	l.flow.HealthTimeout = time.Second
	l.flow.CallTimeout = 500 * time.Millisecond
	start := time.Now()
	rep, err := l.flow.WaitHealthy(context.Background(), bad, true)
	if err == nil {
		t.Fatal("WaitHealthy with an unreachable API server succeeded")
	}
	if !strings.Contains(err.Error(), "not healthy after 1s") || !strings.Contains(err.Error(), "kubernetes /readyz: https://10.99.0.1:7443") {
		t.Errorf("WaitHealthy error = %v, want it to name the failed /readyz check", err)
	}
	if rep == nil || rep.Healthy() {
		t.Errorf("report = %v, want an unhealthy one", rep)
	}
	if time.Since(start) > 6*time.Second {
		t.Errorf("WaitHealthy took %s with a 1s bound", time.Since(start))
	}
}

func TestFlowCheck(t *testing.T) {
	pki := newPKI(t)
	st := &memStore{}
	good := func() *Flow {
		return &Flow{Nodes: []Node{{Name: "cp", ControlPlane: true, Addr: "127.0.0.1:1"}}, Store: st,
			TalosCA: pki.b.Certs.OS.Crt, AdminCert: pki.crt, AdminKey: pki.key}
	}
	tests := []struct {
		name   string
		modify func(*Flow)
		want   string
	}{
		{"no nodes", func(f *Flow) { f.Nodes = nil }, "no nodes to bootstrap"},
		{"no store", func(f *Flow) { f.Store = nil }, "no state folder"},
		{"no ca", func(f *Flow) { f.TalosCA = nil }, "no talos CA or admin certificate"},
		{"mismatched key", func(f *Flow) { _, f.AdminKey, _ = standin.NewCA("other") }, "do not form a pair"},
		{"no control plane", func(f *Flow) { f.Nodes[0].ControlPlane = false }, "no control plane"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := good()
			tt.modify(f)
			_, err := f.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

type memStore struct{ files map[string][]byte }

func (m *memStore) PutFile(name string, data []byte) error {
	if m.files == nil {
		m.files = map[string][]byte{}
	}
	m.files[name] = data
	return nil
}

func (m *memStore) GetFile(name string) ([]byte, error) {
	if d, ok := m.files[name]; ok {
		return d, nil
	}
	return nil, os.ErrNotExist
}

// Stand-ins started as the local provider starts them, without
// certificates: the flow reaches them insecurely in maintenance mode
// only, and after the apply verifies them against the lab's Talos CA
// (talosconfig) and Kubernetes CA (kubeconfig) through the tunnel.
func TestBootstrapCertsFromConfig(t *testing.T) {
	l := newLabWith(t, labOpts{})
	ctx := context.Background()
	for i := range l.flow.Nodes {
		if _, err := l.flow.versionOf(ctx, &l.flow.Nodes[i]); err == nil {
			t.Fatalf("%s verified by the lab's Talos CA before its config was applied", l.flow.Nodes[i].Name)
		}
	}
	res, err := l.flow.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Applied) != 3 || !res.Bootstrapped || !res.Health.Healthy() {
		t.Fatalf("Run: applied %v, bootstrapped %v, health:\n%v", res.Applied, res.Bootstrapped, res.Health)
	}
	for i := range l.flow.Nodes {
		n := &l.flow.Nodes[i]
		if _, err := l.flow.versionOf(ctx, n); err != nil {
			t.Errorf("%s not verified by the lab's Talos CA after the apply: %v", n.Name, err)
		}
	}
	kc, err := l.store.GetFile(FileKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.CA, newPKI(t).b.Certs.K8s.Crt) {
		t.Error("the stored kubeconfig does not trust the lab's Kubernetes CA")
	}
	if !strings.Contains(res.Health.String(), "ok    kubernetes /readyz") {
		t.Errorf("health report lacks a verified /readyz:\n%s", res.Health)
	}
}

package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/standin"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
)

// mapDialer reaches the lab's admin addresses at the loopback ports of
// the stand-ins serving them, as the tunnel would reach the nodes.
type mapDialer map[string]string

func (m mapDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	to, ok := m[addr]
	if !ok {
		return nil, fmt.Errorf("dial %s: no route to host (not a node of the test lab)", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// upgradeRig is the reference local lab with its Talos nodes as
// stand-ins on loopback, bootstrapped by the real flow.
type upgradeRig struct {
	lab    *spec.Lab
	bundle *secrets.Bundle
	store  *secrets.Store
	dialer mapDialer
	nodes  []*standin.Node
}

const upgradeReboot = 200 * time.Millisecond

func newUpgradeRig(t *testing.T, failUpgrades string) *upgradeRig {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(file, spec.Reference(spec.ProviderLocal), 0o600); err != nil {
		t.Fatal(err)
	}
	lab, _, err := spec.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	st, err := secrets.OpenWithIdentity(filepath.Join(dir, secrets.StateDirName), filepath.Join(t.TempDir(), "id.txt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := st.LoadOrCreate(lab)
	if err != nil {
		t.Fatal(err)
	}
	r := &upgradeRig{lab: lab, bundle: b, store: st, dialer: mapDialer{}}
	loop := netip.MustParseAddr("127.0.0.1")
	var endpoint string
	var trustd []string
	for _, m := range lab.Machines() {
		if m.Role != spec.MachineControlPlane && m.Role != spec.MachineWorker {
			continue
		}
		admin, _ := m.Address(spec.RoleAdmin)
		role := standin.RoleWorker
		if m.Role == spec.MachineControlPlane {
			role = standin.RoleControlPlane
			if endpoint == "" {
				endpoint = "https://" + netip.AddrPortFrom(admin, 6443).String()
			}
		}
		n := &standin.Node{
			Name: m.Name, Role: role, Maintenance: true, EphemeralPorts: true,
			AdminAddr: loop, AppsAddr: loop, CertIPs: []netip.Addr{admin},
			TalosVersion: lab.Cluster.TalosVersion, ClusterName: lab.Cluster.Name,
			Endpoint: endpoint, StateDir: t.TempDir(), TrustdEndpoints: trustd,
			RebootDelay: upgradeReboot, FailUpgrades: m.Name == failUpgrades,
		}
		if err := n.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { n.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		ta, _ := n.Addr(standin.ServiceTalos)
		r.dialer[netip.AddrPortFrom(admin, bootstrap.TalosPort).String()] = ta.String()
		if role == standin.RoleControlPlane {
			ka, _ := n.Addr(standin.ServiceKube)
			r.dialer[netip.AddrPortFrom(admin, 6443).String()] = ka.String()
			td, _ := n.Addr(standin.ServiceTrustd)
			trustd = append(trustd, td.String())
		}
		r.nodes = append(r.nodes, n)
	}
	f, err := bootstrap.ForLab(lab, b, st)
	if err != nil {
		t.Fatal(err)
	}
	f.Dialer = r.dialer
	f.NodeTimeout, f.HealthTimeout, f.PollInterval, f.CallTimeout = 10*time.Second, 10*time.Second, 50*time.Millisecond, 5*time.Second
	if _, err := f.Run(context.Background()); err != nil {
		t.Fatalf("bootstrapping the stand-ins: %v", err)
	}
	return r
}

// bump sets the lab's versions to the next patch releases.
func (r *upgradeRig) bump() {
	r.lab.Cluster.TalosVersion = "v1.13.10"
	r.lab.Cluster.KubernetesVersion = "v1.36.4"
}

func (r *upgradeRig) run(dryRun bool) (string, error) {
	var out bytes.Buffer
	err := runUpgrade(context.Background(), &out, r.lab, r.bundle, r.store, r.dialer, upgradeOptions{
		dryRun: dryRun, nodeTimeout: 2 * time.Second, callTimeout: 3 * time.Second, pollInterval: 50 * time.Millisecond,
	})
	return out.String(), err
}

func lastEvent(n *standin.Node, kind string) time.Time {
	var at time.Time
	for _, e := range n.Events() {
		if e.Kind == kind {
			at = e.Time
		}
	}
	return at
}

// healthyAfter is when node n was healthy again after its last event of
// kind (zero if it was not).
func healthyAfter(n *standin.Node, kind string) time.Time {
	var at time.Time
	seen := false
	for _, e := range n.Events() {
		switch {
		case e.Kind == kind:
			seen, at = true, time.Time{}
		case seen && at.IsZero() && e.Kind == standin.EventHealthy:
			at = e.Time
		}
	}
	return at
}

// lastDetail is the detail of node n's last event of kind.
func lastDetail(n *standin.Node, kind string) string {
	var d string
	for _, e := range n.Events() {
		if e.Kind == kind {
			d = e.Detail
		}
	}
	return d
}

// referenceSchematic is the Image Factory schematic ID of the reference
// lab (cluster.extensions: [siderolabs/qemu-guest-agent]): computed once
// with talos.Schematic on spec.Reference and pasted (it is also the ID
// factory.talos.dev answers for that schematic).
const referenceSchematic = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"

func TestUpgradeRollsOutOneNodeAtATime(t *testing.T) {
	r := newUpgradeRig(t, "")
	out, err := r.run(false)
	if err != nil || !strings.Contains(out, "nothing to upgrade: every node runs talos v1.13.9 and kubernetes v1.36.3") {
		t.Fatalf("upgrade of a lab at its versions = %v:\n%s", err, out)
	}

	r.bump()
	out, err = r.run(true)
	if err != nil {
		t.Fatalf("upgrade --dry-run: %v\n%s", err, out)
	}
	// Hard-coded, not computed with the code under test: a change of
	// talos.Schematic (or of the reference lab's extensions) fails here.
	schematic := referenceSchematic
	plan := "plan (control planes first, then workers, one node at a time):\n" +
		"  lab-cp-1: talos v1.13.9 -> v1.13.10, kubernetes v1.36.3 -> v1.36.4\n" +
		"  lab-worker-1: talos v1.13.9 -> v1.13.10, kubernetes v1.36.3 -> v1.36.4\n" +
		"  lab-worker-2: talos v1.13.9 -> v1.13.10, kubernetes v1.36.3 -> v1.36.4\n" +
		"talos installer: factory.talos.dev/installer/" + schematic + ":v1.13.10 (the lab's Image Factory schematic: its extensions are kept)\n" +
		"dry run: nothing changed\n"
	if !strings.Contains(out, plan) || !strings.Contains(out, "homelab stand-ins") {
		t.Errorf("dry-run output:\n%s\nwant the stand-in note and:\n%s", out, plan)
	}
	for _, n := range r.nodes {
		if n.UpgradeImage() != "" || !lastEvent(n, standin.EventKubernetes).IsZero() {
			t.Errorf("--dry-run changed %s", n.Name)
		}
	}

	out, err = r.run(false)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	t.Logf("upgrade output:\n%s", out)
	var prev time.Time
	for i, n := range r.nodes {
		want := "factory.talos.dev/installer/" + schematic + ":v1.13.10"
		if got := n.UpgradeImage(); got != want {
			t.Errorf("%s upgraded with %q, want %q (schematic kept)", n.Name, got, want)
		}
		// The schematic the stand-in was installed from, by the machine
		// config homelab rendered, is the upgrade's.
		if got := standin.ImageSchematic(n.ConfiguredInstallImage()); got != schematic {
			t.Errorf("%s configured with install image %q (schematic %q), want schematic %s", n.Name, n.ConfiguredInstallImage(), got, schematic)
		}
		if d := lastDetail(n, standin.EventUpgraded); !strings.HasSuffix(d, "(schematic kept)") {
			t.Errorf("%s: upgrade event %q, want the installed schematic kept", n.Name, d)
		}
		// Health gating: each next node's upgrade starts after the
		// previous node was back from its reboot with healthy services.
		at, back := lastEvent(n, standin.EventUpgraded), healthyAfter(n, standin.EventUpgraded)
		if i > 0 && (prev.IsZero() || !at.After(prev)) {
			t.Errorf("%s upgraded at %s, not after the previous node was healthy again (%s)", n.Name, at.Format(time.StampMicro), prev.Format(time.StampMicro))
		}
		if back.Sub(at) < upgradeReboot {
			t.Errorf("%s: upgraded at %s, healthy again at %s; want healthy after its %s reboot", n.Name, at.Format(time.StampMicro), back.Format(time.StampMicro), upgradeReboot)
		}
		prev = back
	}
	// prev: the last node healthy again after its Talos upgrade
	for _, n := range r.nodes {
		at := lastEvent(n, standin.EventKubernetes)
		if at.IsZero() || !at.After(prev) {
			t.Errorf("%s: kubernetes upgraded at %v, want once, after every Talos upgrade and the previous node healthy again (%v)", n.Name, at, prev)
		}
		prev = healthyAfter(n, standin.EventKubernetes)
		if prev.Before(at) {
			t.Errorf("%s: no healthy event after its kubernetes upgrade", n.Name)
		}
	}
	for _, want := range []string{
		"talos: upgrading 3 node(s) to v1.13.10",
		"lab-cp-1: upgrading from v1.13.9-homelab-standin to v1.13.10",
		"lab-worker-2: at v1.13.10 and healthy",
		"kubernetes: upgrading 3 node(s) to v1.36.4",
		"lab-worker-1: kubernetes v1.36.3 -> v1.36.4 (machine config applied without reboot)",
		"lab-worker-2: kubernetes v1.36.4 and healthy",
		"upgraded: every node runs talos v1.13.10 and kubernetes v1.36.4",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade output lacks %q", want)
		}
	}

	out, err = r.run(false)
	if err != nil || !strings.Contains(out, "nothing to upgrade: every node runs talos v1.13.10 and kubernetes v1.36.4") {
		t.Errorf("second upgrade = %v:\n%s\nwant nothing to upgrade", err, out)
	}
}

func TestUpgradeStopsAtFailedNode(t *testing.T) {
	r := newUpgradeRig(t, "lab-worker-1")
	r.bump()
	out, err := r.run(false)
	if err == nil {
		t.Fatalf("upgrade through a node failing after its upgrade succeeded:\n%s", out)
	}
	for _, want := range []string{"rollout stopped (lab-worker-2 not upgraded)", "node lab-worker-1", "not healthy", "kubelet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var h hinter
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), "run homelab upgrade again") {
		t.Errorf("error %v has no hint to run upgrade again", err)
	}
	if r.nodes[2].UpgradeImage() != "" {
		t.Error("lab-worker-2 was upgraded after lab-worker-1 failed")
	}
	for _, n := range r.nodes {
		if !lastEvent(n, standin.EventKubernetes).IsZero() {
			t.Errorf("%s: kubernetes upgraded although the Talos rollout stopped", n.Name)
		}
	}
}

func TestUpgradeRefusesDowngrade(t *testing.T) {
	r := newUpgradeRig(t, "")
	r.lab.Cluster.TalosVersion = "v1.13.8"
	_, err := r.run(true)
	var h hinter
	if err == nil || !strings.Contains(err.Error(), "lab-cp-1 runs talos v1.13.9, newer than cluster.talosVersion v1.13.8") || !errors.As(err, &h) {
		t.Errorf("upgrade to an older version = %v, want a refusal with a hint", err)
	}
}

func TestUpgradeNeedsAppliedLab(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(file, spec.Reference(spec.ProviderLocal), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(secrets.IdentityEnv, filepath.Join(t.TempDir(), "id.txt"))
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"upgrade", "--dry-run", "-f", file}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "the lab was never applied") || !strings.Contains(stderr.String(), "hint: run homelab apply first") {
		t.Errorf("upgrade of a lab never applied: exit %d, stderr:\n%s", code, stderr.String())
	}
}

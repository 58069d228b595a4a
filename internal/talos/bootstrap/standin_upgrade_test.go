package bootstrap

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/standin"
)

// bootstrapped runs the flow on a fresh test lab and returns it with its
// kubeconfig.
func bootstrapped(t *testing.T, opts labOpts) (*lab, []byte) {
	t.Helper()
	l := newLabWith(t, opts)
	if _, err := l.flow.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	kc, err := l.store.GetFile(FileKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return l, kc
}

// eventTime is when node n last had an event of kind (zero if never).
func eventTime(n *standin.Node, kind string) time.Time {
	var at time.Time
	for _, e := range n.Events() {
		if e.Kind == kind {
			at = e.Time
		}
	}
	return at
}

// eventDetail is the detail of node n's last event of kind.
func eventDetail(n *standin.Node, kind string) string {
	var d string
	for _, e := range n.Events() {
		if e.Kind == kind {
			d = e.Detail
		}
	}
	return d
}

// Talos upgrade against the stand-ins: one node at a time, each next
// node only once the previous one is back from its reboot at the new
// version and healthy, the Image Factory installer (schematic) kept.
func TestUpgradeTalosStandins(t *testing.T) {
	l, kc := bootstrapped(t, labOpts{})
	image, _ := installer(t)
	ctx := context.Background()
	res, err := l.flow.Upgrade(ctx, image, "v1.13.10", kc)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if got := strings.Join(res.Upgraded, ","); got != "lab-cp-1,lab-worker-1,lab-worker-2" {
		t.Errorf("upgraded %s, want all three in order", got)
	}
	var prev time.Time
	for i, n := range l.nodes {
		// The schematic the node was installed with (its configured
		// machine.install.image) is the one it was upgraded to.
		configured, got := standin.ImageSchematic(n.ConfiguredInstallImage()), standin.ImageSchematic(n.UpgradeImage())
		if configured != testSchematic || got != testSchematic || !strings.HasSuffix(n.UpgradeImage(), ":v1.13.10") {
			t.Errorf("%s: configured with schematic %q, upgraded with %q (%s); want both %s", n.Name, configured, got, n.UpgradeImage(), testSchematic)
		}
		if d := eventDetail(n, standin.EventUpgraded); !strings.HasSuffix(d, "(schematic kept)") {
			t.Errorf("%s: upgrade event %q, want the schematic kept", n.Name, d)
		}
		// Health gating: each next node's upgrade starts after the
		// previous node was back from its reboot with healthy services.
		at, back := eventTime(n, standin.EventUpgraded), eventTime(n, standin.EventHealthy)
		if i > 0 && (prev.IsZero() || !at.After(prev)) {
			t.Errorf("%s upgraded at %s, not after the previous node was healthy again (%s)", n.Name, at.Format(time.StampMicro), prev.Format(time.StampMicro))
		}
		if back.Sub(at) < rebootDelay {
			t.Errorf("%s: upgraded at %s, healthy again at %s; want healthy after its %s reboot", n.Name, at.Format(time.StampMicro), back.Format(time.StampMicro), rebootDelay)
		}
		prev = back
	}
	vs, err := l.flow.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Talos != "v1.13.10" || !v.Standin {
			t.Errorf("%s reports talos %s (stand-in %v), want v1.13.10 from a stand-in", v.Name, v.Talos, v.Standin)
		}
	}

	res, err = l.flow.Upgrade(ctx, image, "v1.13.10", kc)
	if err != nil || len(res.Upgraded) != 0 || len(res.Current) != 3 {
		t.Errorf("second Upgrade = %+v, %v; want nothing upgraded", res, err)
	}
}

func TestUpgradeTalosStandinFails(t *testing.T) {
	l, kc := bootstrapped(t, labOpts{failUpgrades: "lab-worker-1"})
	l.flow.NodeTimeout = 1500 * time.Millisecond
	image, _ := installer(t)
	res, err := l.flow.Upgrade(context.Background(), image, "v1.13.10", kc)
	if err == nil {
		t.Fatal("a rollout through a node failing after its upgrade succeeded")
	}
	for _, want := range []string{"rollout stopped (lab-worker-2 not upgraded)", "node lab-worker-1", "not healthy", "kubelet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	t.Logf("error: %v", err)
	if !eventTime(l.nodes[2], standin.EventUpgraded).IsZero() {
		t.Error("lab-worker-2 was upgraded after lab-worker-1 failed")
	}
	if strings.Join(res.Upgraded, ",") != "lab-cp-1" {
		t.Errorf("upgraded %v, want lab-cp-1 only", res.Upgraded)
	}
}

// rerender gives every node its machine config for Kubernetes k8s.
func rerender(t *testing.T, l *lab, k8s string) {
	t.Helper()
	for i := range l.flow.Nodes {
		l.flow.Nodes[i].Config = machineConfig(t, newPKI(t).b, l.flow.Nodes[i].ControlPlane, k8s)
	}
}

func TestUpgradeKubernetesStandins(t *testing.T) {
	l, kc := bootstrapped(t, labOpts{})
	ctx := context.Background()
	if _, err := l.flow.UpgradeKubernetes(ctx, "v1.36.4", kc); err == nil || !strings.Contains(err.Error(), "does not carry kubernetes v1.36.4") {
		t.Errorf("UpgradeKubernetes with configs of the old version = %v, want a refusal", err)
	}
	rerender(t, l, "1.36.4")
	var lines []string
	l.flow.Progress = func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	res, err := l.flow.UpgradeKubernetes(ctx, "v1.36.4", kc)
	if err != nil {
		t.Fatalf("UpgradeKubernetes: %v", err)
	}
	if got := strings.Join(res.Upgraded, ","); got != "lab-cp-1,lab-worker-1,lab-worker-2" {
		t.Errorf("upgraded %s, want all three, control plane first", got)
	}
	var prev time.Time
	for _, n := range l.nodes {
		at, back := eventTime(n, standin.EventKubernetes), eventTime(n, standin.EventHealthy)
		if at.IsZero() || !at.After(prev) {
			t.Errorf("%s: kubernetes event at %v, previous node healthy at %v; want one, after it", n.Name, at, prev)
		}
		if back.Before(at) {
			t.Errorf("%s: kubernetes at %v, healthy again at %v; want a healthy event after it", n.Name, at, back)
		}
		prev = back
		if !eventTime(n, standin.EventUpgraded).IsZero() {
			t.Errorf("%s was given a Talos upgrade for a Kubernetes one", n.Name)
		}
	}
	if want := "lab-cp-1: kubernetes v1.36.3 -> v1.36.4 (machine config applied without reboot)"; !strings.Contains(strings.Join(lines, "\n"), want) {
		t.Errorf("progress lacks %q:\n%s", want, strings.Join(lines, "\n"))
	}
	vs, err := l.flow.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if !v.KubernetesAt("v1.36.4") {
			t.Errorf("%s at kubernetes %s, want v1.36.4", v.Name, v.KubernetesSummary())
		}
	}
	res, err = l.flow.UpgradeKubernetes(ctx, "v1.36.4", kc)
	if err != nil || len(res.Upgraded) != 0 || len(res.Current) != 3 {
		t.Errorf("second UpgradeKubernetes = %+v, %v; want nothing upgraded", res, err)
	}
}

func TestUpgradeKubernetesStopsAtFailedNode(t *testing.T) {
	l, kc := bootstrapped(t, labOpts{failUpgrades: "lab-cp-1"})
	l.flow.NodeTimeout = 1500 * time.Millisecond
	rerender(t, l, "1.36.4")
	res, err := l.flow.UpgradeKubernetes(context.Background(), "v1.36.4", kc)
	if err == nil {
		t.Fatal("a rollout through a failing control plane succeeded")
	}
	for _, want := range []string{"upgrading kubernetes: rollout stopped (lab-worker-1, lab-worker-2 not upgraded)", "node lab-cp-1", "at kubernetes v1.36.4 but not healthy", "kubelet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	t.Logf("error: %v", err)
	for _, n := range l.nodes[1:] {
		if !eventTime(n, standin.EventKubernetes).IsZero() {
			t.Errorf("%s was upgraded after lab-cp-1 failed", n.Name)
		}
	}
	if len(res.Upgraded) != 0 {
		t.Errorf("upgraded %v, want none", res.Upgraded)
	}
}

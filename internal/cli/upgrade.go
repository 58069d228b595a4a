package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
	"github.com/homelab-dev/homelab/internal/tunnel"
)

// upgradeOptions are homelab upgrade's settings.
type upgradeOptions struct {
	dryRun                   bool
	nodeTimeout, callTimeout time.Duration
	pollInterval             time.Duration
}

func newUpgradeCmd() *cobra.Command {
	var (
		o             upgradeOptions
		via, wgConfig string
	)
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade Talos and Kubernetes to the versions in lab.yaml, one node at a time",
		Long: `upgrade brings the cluster to cluster.talosVersion and
cluster.kubernetesVersion of lab.yaml. It asks every node what it runs
(Talos: the Version call; Kubernetes: the kubelet's and the control-plane
static pods' images), prints the plan, and then:

  1. Talos: each node is upgraded to the lab's Image Factory installer,
     factory.talos.dev/installer/<schematic>:<version>, so that the
     system extensions of cluster.extensions are kept; data is preserved.
  2. Kubernetes: each node's machine config, rendered again for the new
     version, is applied without a reboot (Talos restarts the kubelet and
     the static pods with the new images).

Control planes go first, then workers, one node at a time: the next node
starts only when the previous one runs the new version with its services
healthy and the Kubernetes API ready. A node that does not get there
stops the rollout with an error naming it and what was not healthy; run
upgrade again once it is fixed (nodes already upgraded are skipped).

It reaches the nodes as homelab apply does: directly when this machine is
on the admin network, else through the in-process WireGuard tunnel.
On the local provider the nodes are homelab stand-ins, not Talos: they
record the upgrade and report the new versions, nothing is installed.`,
		Example: `  homelab upgrade --dry-run
  homelab upgrade --wg-config ~/lab-laptop.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			mode, err := parseVia(via)
			if err != nil {
				return fmt.Errorf("upgrading: %w", err)
			}
			lc, err := loadLab(cmd)
			if err != nil {
				return err
			}
			store, err := secrets.Open(lc.stateDir())
			if err != nil {
				return fmt.Errorf("opening the state folder %s: %w", lc.stateDir(), err)
			}
			b, err := store.Load()
			if errors.Is(err, fs.ErrNotExist) {
				return withHint(fmt.Errorf("upgrading: %s holds no secrets: the lab was never applied", lc.stateDir()), "run homelab apply first")
			}
			if err != nil {
				return fmt.Errorf("upgrading: loading the lab's secrets: %w", err)
			}
			d, how, err := reachAdmin(ctx, lc.Lab, store, mode, wgConfig)
			if err != nil {
				return err
			}
			defer d.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "reaching the admin network %s\n", how)
			return runUpgrade(ctx, cmd.OutOrStdout(), lc.Lab, b, store, d, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan and change nothing")
	f.StringVar(&via, "via", string(tunnel.ModeAuto), "how to reach the admin network: auto, direct or tunnel")
	f.StringVar(&wgConfig, "wg-config", "", "WireGuard peer config to reach the admin network through (wg-quick format; default homelab's own peer)")
	f.DurationVar(&o.nodeTimeout, "node-timeout", bootstrap.DefaultNodeTimeout, "how long each node may take to come back at the new version and healthy")
	return cmd
}

// upgradeStep is one node's part of the plan.
type upgradeStep struct {
	v          bootstrap.NodeVersions
	talos, k8s bool
}

// runUpgrade compares what the nodes run with the lab's versions, prints
// the plan, and unless dry-run rolls Talos and then Kubernetes out.
func runUpgrade(ctx context.Context, w io.Writer, lab *spec.Lab, b *secrets.Bundle, store bootstrap.Store, d bootstrap.Dialer, o upgradeOptions) error {
	kc, err := store.GetFile(bootstrap.FileKubeconfig)
	if errors.Is(err, fs.ErrNotExist) {
		return withHint(errors.New("upgrading: the state folder holds no kubeconfig: the cluster was never bootstrapped"), "run homelab apply first")
	}
	if err != nil {
		return fmt.Errorf("upgrading: reading the kubeconfig: %w", err)
	}
	flow, err := bootstrap.ForLab(lab, b, store)
	if err != nil {
		return err
	}
	flow.Dialer = d
	flow.NodeTimeout, flow.CallTimeout, flow.PollInterval = o.nodeTimeout, o.callTimeout, o.pollInterval
	start := time.Now()
	flow.Progress = func(format string, args ...any) {
		fmt.Fprintf(w, "  [%5.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	wantTalos := "v" + strings.TrimPrefix(lab.Cluster.TalosVersion, "v")
	wantK8s := "v" + strings.TrimPrefix(lab.Cluster.KubernetesVersion, "v")

	vs, err := flow.Versions(ctx)
	if err != nil {
		return withHint(fmt.Errorf("upgrading: %w", err), "every node must answer before an upgrade starts: run homelab apply first if lab.yaml has nodes it has not built yet; homelab status lists the guests")
	}
	var steps []upgradeStep
	standin := false
	for _, v := range vs {
		standin = standin || v.Standin
		st := upgradeStep{v: v, talos: v.Talos != wantTalos, k8s: !v.KubernetesAt(wantK8s)}
		if st.talos && newer(v.Talos, wantTalos) {
			return withHint(fmt.Errorf("upgrading: %s runs talos %s, newer than cluster.talosVersion %s", v.Name, v.Talos, wantTalos),
				"homelab does not downgrade: set cluster.talosVersion to %s or later", v.Talos)
		}
		if st.k8s && newer(v.Kubernetes, wantK8s) {
			return withHint(fmt.Errorf("upgrading: %s runs kubernetes %s, newer than cluster.kubernetesVersion %s", v.Name, v.Kubernetes, wantK8s),
				"homelab does not downgrade: set cluster.kubernetesVersion to %s or later", v.Kubernetes)
		}
		steps = append(steps, st)
	}
	if standin {
		fmt.Fprintln(w, "note: the nodes are homelab stand-ins (local provider), not Talos: they record upgrades and report versions, nothing is installed")
	}
	talosNodes, k8sNodes := 0, 0
	for _, st := range steps {
		if st.talos {
			talosNodes++
		}
		if st.k8s {
			k8sNodes++
		}
	}
	if talosNodes == 0 && k8sNodes == 0 {
		fmt.Fprintf(w, "nothing to upgrade: every node runs talos %s and kubernetes %s\n", wantTalos, wantK8s)
		return nil
	}
	image, err := bootstrap.InstallerImage(lab)
	if err != nil {
		return fmt.Errorf("upgrading: %w", err)
	}
	fmt.Fprintln(w, "plan (control planes first, then workers, one node at a time):")
	for _, st := range steps {
		var parts []string
		if st.talos {
			parts = append(parts, fmt.Sprintf("talos %s -> %s", st.v.Talos, wantTalos))
		}
		if st.k8s {
			parts = append(parts, fmt.Sprintf("kubernetes %s -> %s", st.v.KubernetesSummary(), wantK8s))
		}
		if len(parts) == 0 {
			parts = append(parts, "up to date")
		}
		fmt.Fprintf(w, "  %s: %s\n", st.v.Name, strings.Join(parts, ", "))
	}
	if talosNodes > 0 {
		fmt.Fprintf(w, "talos installer: %s (the lab's Image Factory schematic: its extensions are kept)\n", image)
	}
	if o.dryRun {
		fmt.Fprintln(w, "dry run: nothing changed")
		return nil
	}
	fail := func(err error) error {
		return withHint(err, "fix the node named above (homelab status, talosctl with the lab's talosconfig), then run homelab upgrade again: nodes already upgraded are skipped")
	}
	if talosNodes > 0 {
		fmt.Fprintf(w, "talos: upgrading %d node(s) to %s\n", talosNodes, wantTalos)
		if _, err := flow.Upgrade(ctx, image, wantTalos, kc); err != nil {
			return fail(err)
		}
	}
	if k8sNodes > 0 {
		fmt.Fprintf(w, "kubernetes: upgrading %d node(s) to %s\n", k8sNodes, wantK8s)
		if _, err := flow.UpgradeKubernetes(ctx, wantK8s, kc); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(w, "upgraded: every node runs talos %s and kubernetes %s (%.1fs)\n", wantTalos, wantK8s, time.Since(start).Seconds())
	return nil
}

// newer reports whether version a (v1.2.3) is later than b; versions
// that do not parse are not newer.
func newer(a, b string) bool {
	pa, okA := parseVersion(a)
	pb, okB := parseVersion(b)
	if !okA || !okB {
		return false
	}
	for i := range pa {
		if pa[i] != pb[i] {
			return pa[i] > pb[i]
		}
	}
	return false
}

func parseVersion(s string) ([3]int, bool) {
	var out [3]int
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

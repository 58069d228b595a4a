package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/provider"
	"github.com/homelab-dev/homelab/internal/tunnel"
)

// phase is one stage of apply, in order.
type phase int

// The phases of apply.
const (
	phaseInfra   phase = iota // networks, containers, VMs (the plan)
	phaseCluster              // Talos bootstrap, kubeconfig, health
	phaseGitops               // the GitOps repository and Flux
)

var phaseNames = []string{"infra", "cluster", "gitops"}

func (p phase) String() string { return phaseNames[p] }

func parsePhase(s string) (phase, error) {
	for i, n := range phaseNames {
		if s == n {
			return phase(i), nil
		}
	}
	return 0, withHint(fmt.Errorf("--until %q is not a phase", s), "use --until infra, cluster or gitops")
}

// applyOptions are apply's flags.
type applyOptions struct {
	pf            providerFlags
	allowDataLoss bool
	until         string
	cluster       clusterOptions
	componentsURL string
}

func newApplyCmd() *cobra.Command {
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Build or update the lab so it matches the spec, up to a cluster managed by GitOps",
		Long: `apply brings the lab to the spec in three phases, each announced with the
time it took; --until stops after one:

  infra    the plan (see 'homelab plan'), printed and carried out: networks,
           firewall, the VPN and load balancer containers, the manager and
           the Talos VMs. Steps run in parallel along their dependencies,
           transient failures are retried, progress is shown per step.
  cluster  through the VPN: waits for each node's Talos API, applies its
           machine config where it is in maintenance mode, bootstraps etcd
           once (a cluster already bootstrapped is detected), stores the
           kubeconfig and talosconfig encrypted in the state folder, and
           waits for health (bounded by --node-timeout and
           --health-timeout) with a report of every check.
  gitops   builds the lab's GitOps repository (secrets SOPS-encrypted),
           installs Flux into the cluster (its install manifests are
           downloaded once, then kept in the state folder) and pushes the
           tree with Flux's manifests to the manager's Git server, which
           Flux reconciles from.

The admin network is reached through an in-process WireGuard tunnel as
homelab's own VPN peer (homelab-operator, created in the state folder on
the first apply and given to the VPN server by the same apply), or
directly when this machine is on the admin network (--via).

On the local provider the Talos nodes are stand-ins: the cluster phase
runs the real Talos client against them and says so; Flux is not
installed there (a stand-in runs no Kubernetes).

apply is idempotent: a second apply with an unchanged spec changes nothing
and says so. It is resumable: after a crash, a failed step or Ctrl-C, run it
again and it converges from what exists. It never touches objects the lab
does not own, and it refuses to replace a guest that holds data unless
--allow-data-loss is given.`,
		Example: `  homelab apply
  homelab apply --until infra
  homelab apply --node-timeout 3m --health-timeout 5m
  homelab apply --via direct        # on the manager VM`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPhases(cmd.Context(), cmd, o)
		},
	}
	o.pf.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&o.allowDataLoss, "allow-data-loss", false, "allow replacing guests whose disks hold data")
	f.StringVar(&o.until, "until", "gitops", "the last phase to run: infra, cluster or gitops")
	o.cluster.register(cmd)
	f.StringVar(&o.componentsURL, "components-url", "", "where to download Flux's install manifests (default: the GitHub release of "+gitops.FluxVersion+")")
	return cmd
}

// runApply plans and carries out the plan (destroy: everything owned
// goes); apply runs every phase after it with default options.
func runApply(ctx context.Context, cmd *cobra.Command, pf providerFlags, destroy, allowDataLoss bool) error {
	if destroy {
		_, err := runInfra(ctx, cmd, pf, true, allowDataLoss, nil)
		return err
	}
	return runPhases(ctx, cmd, defaultApplyOptions(pf, allowDataLoss))
}

// defaultApplyOptions are apply's flags left at their defaults (homelab
// demo applies with them): every phase, the admin network reached
// automatically, the flow's default bounds.
func defaultApplyOptions(pf providerFlags, allowDataLoss bool) applyOptions {
	return applyOptions{pf: pf, allowDataLoss: allowDataLoss, until: phaseGitops.String(),
		cluster: clusterOptions{via: string(tunnel.ModeAuto)}}
}

// runPhases runs apply's phases up to o.until.
func runPhases(ctx context.Context, cmd *cobra.Command, o applyOptions) error {
	until, err := parsePhase(o.until)
	if err != nil {
		return err
	}
	if err := o.cluster.check(); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	t0 := time.Now()
	announce(out, phaseInfra, "the lab's networks, containers and machines")
	lc, err := runInfra(ctx, cmd, o.pf, false, o.allowDataLoss, &o.cluster)
	if err != nil {
		return err
	}
	done(out, phaseInfra, t0)
	if until == phaseInfra {
		fmt.Fprintln(out, "Stopped after the infra phase (--until infra): run homelab apply to bootstrap the cluster.")
		return nil
	}

	t1 := time.Now()
	announce(out, phaseCluster, "Talos bootstrap through the VPN")
	cl, err := runCluster(ctx, out, lc, o.cluster)
	if err != nil {
		return err
	}
	defer cl.close()
	done(out, phaseCluster, t1)
	if until == phaseCluster {
		fmt.Fprintln(out, "Stopped after the cluster phase (--until cluster): run homelab apply to set up GitOps.")
		return nil
	}

	t2 := time.Now()
	announce(out, phaseGitops, "the GitOps repository and Flux")
	if err := runGitops(ctx, out, lc, cl, fluxOptions{ComponentsURL: o.componentsURL}); err != nil {
		return err
	}
	done(out, phaseGitops, t2)
	fmt.Fprintf(out, "apply: all phases done in %s.\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

func announce(w io.Writer, p phase, what string) {
	fmt.Fprintf(w, "\n== phase %d/3 %s: %s\n", int(p)+1, p, what)
}

func done(w io.Writer, p phase, since time.Time) {
	fmt.Fprintf(w, "== phase %s done in %s\n", p, time.Since(since).Round(time.Millisecond))
}

// runInfra plans and carries out the plan, and returns the lab it loaded.
// With drain set, Talos workers the plan deletes because they left the
// spec are first drained out of Kubernetes and deleted from it.
func runInfra(ctx context.Context, cmd *cobra.Command, pf providerFlags, destroy, allowDataLoss bool, drain *clusterOptions) (*labContext, error) {
	t0 := time.Now()
	r, err := makePlan(ctx, cmd, pf, destroy, allowDataLoss)
	if err != nil {
		return nil, err
	}
	defer r.close()
	p, prov := r.plan, r.prov
	out := cmd.OutOrStdout()
	if p.Empty() {
		if destroy {
			fmt.Fprintln(out, "Nothing to destroy: the target holds nothing this lab owns.")
		} else {
			fmt.Fprintf(out, "No changes: the lab matches the spec (%d resources checked in %s).\n", p.Unchanged, time.Since(t0).Round(time.Millisecond))
		}
		return r.lab, keptNote(ctx, cmd, prov, destroy)
	}
	if err := p.Print(out); err != nil {
		return nil, err
	}
	if drain != nil && !destroy {
		if err := drainLeaving(ctx, out, r.lab, *drain, leavingWorkers(r.lab.Lab, p)); err != nil {
			return nil, err
		}
	}
	return r.lab, execute(ctx, cmd, r, pf, destroy, t0)
}

func execute(ctx context.Context, cmd *cobra.Command, r *planned, pf providerFlags, destroy bool, t0 time.Time) error {
	p, prov := r.plan, r.prov
	prog, wait := progressFor(cmd.ErrOrStderr(), len(p.Steps))
	_, err := apply.Run(ctx, p, prov, apply.Options{Parallel: pf.steps(r.lab.Lab.Host.Provider), Progress: prog})
	wait()
	if err != nil {
		verb := "apply"
		if destroy {
			verb = "destroy"
		}
		return withHint(fmt.Errorf("%s did not finish: %w", verb, err), "run 'homelab %s' again once the cause is fixed; it resumes from what exists", verb)
	}
	word := "Applied"
	if destroy {
		word = "Destroyed"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %s in %s.\n", word, p.Summary(), time.Since(t0).Round(time.Millisecond))
	return keptNote(ctx, cmd, prov, destroy)
}

// keptNote says, after destroy, what the provider left on purpose.
func keptNote(ctx context.Context, cmd *cobra.Command, prov provider.Provider, destroy bool) error {
	k, ok := prov.(provider.Keeper)
	if !destroy || !ok {
		return nil
	}
	kept, err := k.Kept(ctx)
	if err != nil {
		return fmt.Errorf("listing what destroy kept: %w", err)
	}
	for _, s := range kept {
		fmt.Fprintf(cmd.OutOrStdout(), "kept: %s\n", s)
	}
	return nil
}

// clusterOptions are the flags of the cluster phase (apply, upgrade).
type clusterOptions struct {
	via           string
	wgConfig      string
	nodeTimeout   time.Duration
	healthTimeout time.Duration
}

func (o *clusterOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.via, "via", string(tunnel.ModeAuto), "how to reach the admin network: auto (direct if it answers, else the tunnel), direct or tunnel")
	f.StringVar(&o.wgConfig, "wg-config", "", "a WireGuard peer config to tunnel through instead of homelab's own peer (wg-quick format)")
	f.DurationVar(&o.nodeTimeout, "node-timeout", 10*time.Minute, "how long to wait for each Talos node's API (and for it to come back configured)")
	f.DurationVar(&o.healthTimeout, "health-timeout", 10*time.Minute, "how long to wait for the cluster to be healthy")
}

func (o *clusterOptions) check() error {
	if _, err := parseVia(o.via); err != nil {
		return err
	}
	if o.nodeTimeout < 0 || o.healthTimeout < 0 {
		return withHint(fmt.Errorf("timeouts must not be negative"), "pass durations such as 3m or 90s")
	}
	return nil
}

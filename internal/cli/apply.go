package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/provider"
)

func newApplyCmd() *cobra.Command {
	var (
		pf            providerFlags
		allowDataLoss bool
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Build or update the lab so it matches the spec",
		Long: `apply computes the plan (see 'homelab plan'), prints it, and carries it out:
steps run in parallel along their dependencies, transient failures are
retried, and progress is shown per step. It is idempotent: a second apply
with an unchanged spec changes nothing and says so. It is resumable: after a
crash, a failed step or Ctrl-C, run it again and it converges from what
exists. It never touches objects the lab does not own, and it refuses to
replace a guest that holds data unless --allow-data-loss is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd.Context(), cmd, pf, false, allowDataLoss)
		},
	}
	pf.register(cmd)
	cmd.Flags().BoolVar(&allowDataLoss, "allow-data-loss", false, "allow replacing guests whose disks hold data")
	return cmd
}

// runApply plans and carries out the plan (destroy: everything owned goes).
func runApply(ctx context.Context, cmd *cobra.Command, pf providerFlags, destroy, allowDataLoss bool) error {
	t0 := time.Now()
	r, err := makePlan(ctx, cmd, pf, destroy, allowDataLoss)
	if err != nil {
		return err
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
		return keptNote(ctx, cmd, prov, destroy)
	}
	if err := p.Print(out); err != nil {
		return err
	}
	return execute(ctx, cmd, r, pf, destroy, t0)
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

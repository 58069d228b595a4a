package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider"
)

func newPlanCmd() *cobra.Command {
	var (
		pf            providerFlags
		output        string
		allowDataLoss bool
		detailed      bool
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what apply would create, change or delete",
		Long: `plan compares the lab spec with what exists on the target (found by the
lab's marks: name prefix, tags, comments; there is no state file) and prints
the steps apply would take: + create, ~ update in place (with the fields that
drifted), -/+ replace (and why), - delete. Nothing is changed.

With -o json the plan is printed as JSON for tools. With --detailed-exitcode
the exit code is 0 when there is nothing to do and 2 when there are changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return withHint(fmt.Errorf("unknown output format %q", output), "use -o text or -o json")
			}
			r, err := makePlan(cmd.Context(), cmd, pf, false, allowDataLoss)
			if err != nil {
				return err
			}
			defer r.close()
			p := r.plan
			if output == "json" {
				err = p.WriteJSON(cmd.OutOrStdout())
			} else {
				err = p.Print(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if detailed && !p.Empty() {
				return &exitError{code: 2, err: errChangesPending}
			}
			return nil
		},
	}
	pf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().BoolVar(&allowDataLoss, "allow-data-loss", false, "plan replacements of guests that hold data as allowed")
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 2 when the plan has changes")
	return cmd
}

type quietError string

func (e quietError) Error() string { return string(e) }

const errChangesPending = quietError("the plan has changes")

// planned is a lab with its provider open and its plan made.
type planned struct {
	lab  *labContext
	prov provider.Provider
	plan *plan.Plan
}

func (r *planned) close() { _ = r.prov.Close() }

// makePlan loads the lab, renders it, opens its provider and compares.
// With destroy set, the desired set is empty: every owned object goes.
func makePlan(ctx context.Context, cmd *cobra.Command, pf providerFlags, destroy, allowDataLoss bool) (*planned, error) {
	lc, err := loadLab(cmd)
	if err != nil {
		return nil, err
	}
	if err := lc.prepare(cmd); err != nil {
		return nil, err
	}
	prov, err := lc.openProvider(ctx, cmd, pf)
	if err != nil {
		return nil, err
	}
	r := &planned{lab: lc, prov: prov}
	var desired []plan.Resource
	if !destroy {
		if desired, err = prov.Desired(lc.Lab, lc.Arts); err != nil {
			r.close()
			return nil, fmt.Errorf("listing what the lab needs: %w", err)
		}
	}
	observed, err := prov.Observe(ctx)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("reading the target's current state: %w", err)
	}
	if r.plan, err = plan.Make(desired, observed, plan.Options{AllowDataLoss: allowDataLoss}); err != nil {
		r.close()
		return nil, fmt.Errorf("planning: %w", err)
	}
	return r, nil
}

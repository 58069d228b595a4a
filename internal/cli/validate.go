package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/spec"
)

func newValidateCmd() *cobra.Command {
	var strict bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check lab.yaml and print the capacity budget",
		Long: `validate loads the lab spec strictly and reports every problem at once,
each with file:line:col, its YAML path, what is wrong and a hint:

  - the file itself: unknown keys, wrong types, malformed sizes or addresses;
  - the IP plan: malformed or overlapping CIDRs (the VPN tunnel included),
    addresses outside their network or taken twice, gateways, VMIDs;
  - capacity: guests' memory and disk against the host minus the reserve
    (errors) and vCPU overcommit (warning);
  - Talos: node minimums, the control-plane count, and whether the Talos
    version supports the Kubernetes version;
  - the security policy: admin services (Talos API, Kubernetes API, SSH,
    dashboards) exposed on the wan network, cluster nodes or the manager on
    wan, the load balancer given a leg on the admin network.

Warnings do not fail the check unless --strict. The budget table follows
the diagnostics. Exit status: 0 valid, 1 errors.`,
		Example: `  homelab validate
  homelab validate --strict -f pve.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := cmd.Flag("file").Value.String()
			lab, warns, err := spec.Load(path)
			diags := spec.Diagnostics(err)
			if err != nil && len(diags) == 0 {
				if errors.Is(err, fs.ErrNotExist) {
					return withHint(err, "write the reference lab with homelab init, or pass -f path/to/lab.yaml")
				}
				return err
			}
			// Errors and warnings together, in file order.
			all := append(slices.Clone(diags), warns...)
			slices.SortStableFunc(all, func(a, b spec.Diagnostic) int {
				return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
			})
			stderr := cmd.ErrOrStderr()
			for _, d := range all {
				fmt.Fprintln(stderr, d.Error())
			}
			out := cmd.OutOrStdout()
			if lab != nil {
				if len(warns)+len(diags) > 0 {
					fmt.Fprintln(stderr)
				}
				fmt.Fprint(out, lab.Budget().Table())
			}
			nerr := len(diags)
			if strict {
				nerr += len(warns)
			}
			if nerr > 0 {
				what := fmt.Sprintf("%d %s", len(diags), plural(len(diags), "error"))
				if strict && len(warns) > 0 {
					what += fmt.Sprintf(" and %d %s (--strict)", len(warns), plural(len(warns), "warning"))
				}
				return &exitError{code: 1, err: fmt.Errorf("%s is not valid: %s", path, what)}
			}
			fmt.Fprintf(out, "\n%s is valid", path)
			if len(warns) > 0 {
				fmt.Fprintf(out, " (%d %s)", len(warns), plural(len(warns), "warning"))
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strict", false, "treat warnings as errors")
	return cmd
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

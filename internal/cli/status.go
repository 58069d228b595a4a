package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/provider"
)

func newStatusCmd() *cobra.Command {
	var pf providerFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's guests, addresses, processes and health",
		Long: `status shows what exists of the lab on its target: each guest with its
addresses and state, and, where the provider can tell, its processes and
the load balancer's view of backend health. It changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lc, err := loadLab(cmd)
			if err != nil {
				return err
			}
			prov, err := lc.openProvider(ctx, cmd, pf)
			if err != nil {
				return err
			}
			defer prov.Close()
			if s, ok := prov.(provider.Statuser); ok {
				return s.Status(ctx, cmd.OutOrStdout())
			}
			observed, err := prov.Observe(ctx)
			if err != nil {
				return fmt.Errorf("reading the target's current state: %w", err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RESOURCE\tATTRIBUTES")
			for _, r := range observed {
				fmt.Fprintf(tw, "%s\t%d\n", r.ID(), len(r.Attrs))
			}
			return tw.Flush()
		},
	}
	pf.register(cmd)
	return cmd
}

package cli

import (
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/provider/local"
)

// newSuperviseCmd is the local provider's per-lab supervisor, started by
// apply in its own session. Hidden: users never run it themselves.
func newSuperviseCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:    "__supervise --state DIR",
		Short:  "Run the daemons of a local lab (started by apply)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return local.Supervise(ctx, state)
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "the lab's state folder (<labdir>/.homelab)")
	_ = cmd.MarkFlagRequired("state")
	return cmd
}

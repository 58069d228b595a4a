package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/verify"
)

// ExitMismatch is verify's exit code when a probe disagrees with the policy.
const exitMismatch = 2

func newVerifyCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Probe the running local lab with real packets against the security policy",
		Long: `verify sends real packets through the running local lab and checks who can
reach what against the security policy: from the Internet, a VPN peer's
device (through the WireGuard tunnel), the manager, a cluster node and the
load balancer, to the load balancer's frontends (HTTP through the LB to a
worker, which must see the client's real address), the admin APIs on net1,
the workers' ingress and the LB's admin listener on net2, and the Internet
(egress, which must leave NATed). It prints the matrix and exits with
status 2 when any flow differs from the policy.

The Talos nodes of the local lab are stand-ins (homelab standin). verify
needs root, like apply: it enters the lab's network namespaces.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lc, err := loadLab(cmd)
			if err != nil {
				return err
			}
			if lc.Lab.Host.Provider != spec.ProviderLocal {
				return withHint(errors.New("verify probes the local provider's namespaces; this lab's provider is "+string(lc.Lab.Host.Provider)),
					"on Proxmox, check the firewall from the VPN with the tools on the manager VM")
			}
			if err := local.CheckPrivileges(); err != nil {
				return err
			}
			rep, err := verify.Run(cmd.Context(), lc.Lab, verify.Options{Timeout: timeout})
			if rep != nil && len(rep.Probes) > 0 {
				rep.Print(cmd.OutOrStdout())
			}
			var mm *verify.MismatchError
			if errors.As(err, &mm) {
				return &exitError{code: exitMismatch, err: err}
			}
			if err != nil {
				return withHint(err, "build the lab first with 'homelab apply' (as root)")
			}
			fmt.Fprintln(cmd.OutOrStdout(), "every flow is as the policy says")
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 700*time.Millisecond, "how long one probe waits for an answer")
	return cmd
}

package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/lb/lbcmd"
)

func newLBCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lb",
		Short: "Run or check the edge load balancer",
		Long: `lb runs the lab's edge load balancer: a layer 4 proxy for TCP (and UDP)
that routes by port or by TLS SNI without terminating TLS, balances over
health-checked servers, speaks the PROXY protocol, limits abusive sources
and reloads without dropping connections.

Its config file is written by "homelab render" from lab.yaml
(loadbalancer/lb.yaml); docs/lb.md is its reference. The same code ships
as the small standalone binary homelab-lb for the LB container.`,
	}
	cmd.AddCommand(newLBRunCmd(), newLBCheckCmd())
	return cmd
}

func newLBRunCmd() *cobra.Command {
	var o lbcmd.Options
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Serve the load balancer until interrupted",
		Long: `run serves until SIGINT or SIGTERM, then stops accepting and lets open
connections finish for --grace. SIGHUP, or a change to the config
file, reloads it: listeners that stay keep their sockets, connections
continue on their servers, removed servers drain. An invalid new config is
logged and the running one stays.`,
		Example: `  homelab lb run --config loadbalancer/lb.yaml
  homelab lb run --config /etc/homelab-lb/lb.yaml --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.ConfigPath == "" {
				return withHint(errors.New("running the load balancer: no config"), "pass --config loadbalancer/lb.yaml (written by homelab render)")
			}
			o.Stderr = cmd.ErrOrStderr()
			if err := lbcmd.Serve(cmd.Context(), o); err != nil {
				return fmt.Errorf("running the load balancer: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.ConfigPath, "config", "", "load balancer config file")
	cmd.Flags().StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&o.LogFormat, "log-format", "text", "text or json")
	cmd.Flags().DurationVar(&o.Watch, "watch", 2*time.Second, "how often to check the config file for changes (negative: SIGHUP only)")
	cmd.Flags().DurationVar(&o.Grace, "grace", 5*time.Second, "on SIGTERM, how long open connections may finish")
	return cmd
}

func newLBCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a load balancer config and print every problem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return withHint(errors.New("checking the load balancer config: no config"), "pass --config loadbalancer/lb.yaml")
			}
			if _, err := lbcmd.Check(path); err != nil {
				return withHint(fmt.Errorf("checking the load balancer config:\n%w", err), "see docs/lb.md for the config reference")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", path)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "load balancer config file")
	return cmd
}

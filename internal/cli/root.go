// Package cli holds the homelab commands: one file per command, each parsing
// flags, calling into the internal packages and printing results. No lab
// logic lives here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// hintError is an error with a line telling the user how to fix it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }
func (e *hintError) Hint() string  { return e.hint }

// hinter is any error that carries a fix-it hint; packages below the CLI
// provide one by implementing Hint() string, without importing this one.
type hinter interface {
	error
	Hint() string
}

// withHint attaches a fix-it hint to err; Run prints it on its own line.
func withHint(err error, format string, args ...any) error {
	return &hintError{err: err, hint: fmt.Sprintf(format, args...)}
}

// exitError carries a specific exit code (for example verify's mismatch).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Run executes the homelab command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "homelab: %v\n", err)
	var h hinter
	if errors.As(err, &h) && h.Hint() != "" {
		fmt.Fprintf(stderr, "hint: %s\n", h.Hint())
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "homelab",
		Short: "Build and run a production-like Kubernetes homelab from one lab.yaml",
		Long: `homelab turns one declarative file, lab.yaml, into a production-like
Kubernetes homelab on a single small machine, and runs it afterwards.

The lab: a Proxmox VE host with three isolated networks (wan, admin, apps),
a WireGuard VPN container as the only door to the admin network, an L4 load
balancer container in front of a Talos Linux Kubernetes cluster, and a
manager VM holding the Talos toolkit and GitOps.

The same file builds the whole topology on one Linux machine with network
namespaces (provider "local"), where the Talos nodes are stand-ins that
serve the ports a real node serves.

Start with:
  homelab demo            build the reference lab locally and tour it (root)
  homelab init            write a commented reference lab.yaml
  homelab validate        check it and print the capacity budget`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringP("file", "f", "lab.yaml", "path to the lab spec")
	root.AddCommand(
		newInitCmd(),
		newValidateCmd(),
		newSchemaCmd(),
		newStandinCmd(),
		newVPNCmd(),
		newRenderCmd(),
		newDiagramCmd(),
		newSuperviseCmd(),
		newVerifyCmd(),
		newDemoCmd(),
		newPlanCmd(),
		newApplyCmd(),
		newStatusCmd(),
		newDestroyCmd(),
		newLBCmd(),
		newGitopsCmd(),
		newKubeconfigCmd(),
		newUpgradeCmd(),
		newGitserverCmd(),
	// one line per command; each lives in its own file
	)
	return root
}

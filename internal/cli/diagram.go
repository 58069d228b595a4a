package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/diagram"
)

func newDiagramCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "diagram",
		Short: "Draw the lab's architecture as an SVG",
		Long: `diagram draws the lab from lab.yaml as an SVG: the host, the three
networks (wan, admin, apps) with their bridges and CIDRs, every guest with
its role, size and addresses, the ports exposed to the Internet (the load
balancer's frontends, the VPN's UDP port) and the VPN path to the admin
network. It needs no secrets and changes nothing; open the file in a
browser. "--out -" writes the SVG to standard output.`,
		Example: `  homelab diagram
  homelab diagram --out docs/lab.svg -f pve.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := cmd.Flag("file").Value.String()
			lab, err := loadRenderLab(path, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			svg := diagram.SVG(lab)
			if out == "-" {
				_, err := cmd.OutOrStdout().Write(svg)
				return err
			}
			if err := os.WriteFile(out, svg, 0o644); err != nil {
				return withHint(fmt.Errorf("writing the diagram: %w", err), "choose another file with --out")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d guests, %d networks)\n", out, len(lab.Machines()), len(lab.Networks))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "lab.svg", `SVG file to write ("-" for standard output)`)
	return cmd
}

package cli

import (
	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/spec"
)

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of lab.yaml, for editors",
		Long: `schema prints a JSON Schema (draft 2020-12) of lab.yaml, generated from
homelab's own Go types and their documentation. Editors use it for
completion, hover help and inline errors. With the YAML language server
(VS Code, Neovim, Helix...):

  homelab schema > lab.schema.json

and put this line at the top of lab.yaml:

  # yaml-language-server: $schema=lab.schema.json

The schema checks shapes and enums; homelab validate remains the full check
(address plan, capacity, security policy).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(spec.JSONSchema())
			return err
		},
	}
}

package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/spec"
)

func newInitCmd() *cobra.Command {
	var provider string
	var force bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented reference lab.yaml",
		Long: `init writes the reference lab: a 16GiB / 500GiB / 4-core host with three
networks (wan, admin, apps), a WireGuard VPN container, a load balancer
container, a manager VM and a small Talos Kubernetes cluster (one control
plane, two workers) running Nextcloud and OpenProject through GitOps.

Every section is commented: read the file to learn the architecture, then
edit it to fit your machine and network. init prints the capacity budget of
the lab it wrote. It refuses to overwrite an existing file unless --force.

--provider local (the default) builds the lab on this Linux machine with
network namespaces; --provider proxmox adds the Proxmox VE section (API
endpoint, node, storage, token ID; the token secret stays out of the file).`,
		Example: `  homelab init
  homelab init --provider proxmox -f pve.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := spec.Provider(provider)
			if p != spec.ProviderLocal && p != spec.ProviderProxmox {
				return withHint(fmt.Errorf("unknown provider %q", provider), "use --provider local or --provider proxmox")
			}
			path := cmd.Flag("file").Value.String()
			data := spec.Reference(p)
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(path, flags, 0o644)
			if errors.Is(err, fs.ErrExist) {
				return withHint(fmt.Errorf("writing %s: the file already exists", path), "pass --force to overwrite it, or -f to write another file")
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", path, err)
			}
			if _, err := f.Write(data); err != nil {
				f.Close()
				return fmt.Errorf("writing %s: %w", path, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("writing %s: %w", path, err)
			}
			lab, _, err := spec.Parse(path, data)
			if err != nil {
				return fmt.Errorf("checking the reference lab (a bug in homelab): %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s (provider %s)\n\n", path, p)
			fmt.Fprint(out, lab.Budget().Table())
			fmt.Fprintf(out, "\nnext: read %s, adapt it, then run homelab validate\n", path)
			return nil
		},
	}
	cmd.Flags().StringVar(&provider, "provider", string(spec.ProviderLocal), "target: local (network namespaces on this machine) or proxmox")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}

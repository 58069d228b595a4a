package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

func newRenderCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Write every file the lab needs (Talos, WireGuard, nftables, LB, cloud-init)",
		Long: `render turns lab.yaml and the lab's secrets into every artifact the lab
needs, in one folder:

  talos/<node>.yaml, talos/talosconfig      machine configs and client config (secret)
  talos/schematic.yaml, talos/schematic.id  the Image Factory schematic and its ID
  wireguard/server.conf                     the VPN server (secret)
  wireguard/peers/<name>.conf               one client config per peer, split tunnel
                                            to the admin network (secret when homelab
                                            generated the peer's key)
  nftables/host.nft, lb.nft, vpn.nft        the firewall of the host and containers
  lb/lb.yaml                                the load balancer's config
  cloud-init/manager/*                      the manager VM's seed (tools, SSH keys, the
                                            lab's Git repository)
  git/manager/*                             the Git server's host key and authorized keys
                                            (the local provider's manager stand-in)
  proxmox/interfaces                        the bridges for /etc/network/interfaces
  diagram/lab.svg                           the architecture (as homelab diagram draws it)

The VPN server's config lists homelab's own peer and the peers added with
homelab vpn peer add, as homelab apply builds it.

Secrets (Talos CAs and tokens, WireGuard keys) are created on first use in
the state folder beside the spec (<labdir>/.homelab, age encrypted) and
reused, so rendering again gives identical files. Secret artifacts are
written 0600 in 0700 folders: keep them out of Git.`,
		Example: `  homelab render
  homelab render --out /tmp/lab-out -f pve.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := cmd.Flag("file").Value.String()
			if filepath.Clean(out) == "." || filepath.Clean(out) == filepath.Clean(filepath.Dir(path)) {
				return withHint(fmt.Errorf("rendering into %s: the output folder is made private (0700) and filled with generated files", out),
					"render into a folder of its own, for example --out out")
			}
			lab, err := loadRenderLab(path, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			stateDir := filepath.Join(filepath.Dir(path), secrets.StateDirName)
			store, err := secrets.Open(stateDir)
			if err != nil {
				return secretsError("opening the lab's secrets", err)
			}
			bundle, created, err := store.LoadOrCreate(lab)
			if err != nil {
				return secretsError("loading the lab's secrets", err)
			}
			arts, err := renderLab(cmd.ErrOrStderr(), lab, store, bundle)
			if err != nil {
				return err
			}
			n, err := render.Write(out, arts)
			if err != nil {
				return withHint(err, "choose another folder with --out")
			}
			w := cmd.OutOrStdout()
			if created {
				fmt.Fprintf(w, "secrets: new ones saved, encrypted, in %s\n", stateDir)
			} else {
				fmt.Fprintf(w, "secrets: reused from %s\n", stateDir)
			}
			fmt.Fprintf(w, "rendered %d artifacts of lab %s into %s\n", len(arts), lab.Name, out)
			if n > 0 {
				fmt.Fprintf(w, "%d hold secrets, written 0600 in 0700 folders (never commit them):\n", n)
				for _, a := range arts {
					if a.Secret {
						fmt.Fprintf(w, "  0600  %s\n", a.Path)
					}
				}
			}
			fmt.Fprintf(w, "%d hold no secret:\n", len(arts)-n)
			for _, a := range arts {
				if !a.Secret {
					fmt.Fprintf(w, "  0644  %s\n", a.Path)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "out", "folder to write the artifacts into")
	return cmd
}

// loadRenderLab loads and validates the spec for commands that build from it:
// warnings go to stderr, errors fail with a pointer to homelab validate.
func loadRenderLab(path string, stderr io.Writer) (*spec.Lab, error) {
	lab, warns, err := spec.Load(path)
	for _, d := range warns {
		fmt.Fprintln(stderr, d.Error())
	}
	if err != nil {
		diags := spec.Diagnostics(err)
		if len(diags) == 0 {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, withHint(err, "write the reference lab with homelab init, or pass -f path/to/lab.yaml")
			}
			return nil, fmt.Errorf("loading %s: %w", path, err)
		}
		for _, d := range diags {
			fmt.Fprintln(stderr, d.Error())
		}
		return nil, withHint(fmt.Errorf("%s is not valid: %d %s", path, len(diags), plural(len(diags), "error")),
			"fix the problems above; homelab validate shows them with the capacity budget")
	}
	return lab, nil
}

// secretsError turns a state folder problem into an error with a hint.
func secretsError(doing string, err error) error {
	var ie *secrets.IdentityError
	if errors.As(err, &ie) {
		return withHint(fmt.Errorf("%s: %w", doing, err), "%s", ie.Hint())
	}
	return fmt.Errorf("%s: %w", doing, err)
}

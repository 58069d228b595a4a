package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/gitrepo"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

func newGitserverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gitserver",
		Short: "Serve the lab's Git repository over SSH (the local provider's manager stand-in)",
		Long: `gitserver serves bare Git repositories over SSH, as the manager VM does
with sshd and git-shell. The local provider runs it in the manager's
namespace on port 22 of its admin address, so that "homelab apply" pushes
the GitOps tree and Flux-like clients fetch it exactly as on Proxmox.

It accepts only the keys of --authorized (the file homelab render writes
as git/manager/authorized_keys) and runs only git-upload-pack (fetch) and
git-receive-pack (push) with the system's git. A key with a
command="git-upload-pack '...'" option (Flux's deploy key) may only fetch.
Anything else (a shell, other commands, port forwarding) is refused.
docs/gitrepo.md describes the repository and its keys.`,
	}
	cmd.AddCommand(newGitserverRunCmd())
	return cmd
}

func newGitserverRunCmd() *cobra.Command {
	var (
		s                 gitrepo.Server
		hostKey, authFile string
		repos             []string
	)
	cmd := &cobra.Command{
		Use:   "run --dir DIR --listen ADDR --host-key FILE --authorized FILE",
		Short: "Serve until interrupted",
		Example: `  homelab gitserver run --dir /var/lib/homelab/git --listen 10.10.1.5:22 \
      --host-key git/manager/ssh_host_ed25519_key --authorized git/manager/authorized_keys --repo lab`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if s.Dir == "" || s.Listen == "" || hostKey == "" || authFile == "" {
				return withHint(errors.New("running the git server: missing flags"), "pass --dir, --listen, --host-key and --authorized")
			}
			var err error
			if s.HostKey, err = os.ReadFile(hostKey); err != nil {
				return fmt.Errorf("running the git server: reading the host key: %w", err)
			}
			if s.Authorized, err = os.ReadFile(authFile); err != nil {
				return fmt.Errorf("running the git server: reading the authorized keys: %w", err)
			}
			for _, r := range repos {
				if err := gitrepo.InitBare(cmd.Context(), s.Git, s.Dir, r); err != nil {
					return fmt.Errorf("running the git server: %w", err)
				}
			}
			s.Log = cmd.ErrOrStderr()
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&s.Dir, "dir", "", "folder holding the bare repositories (<name>.git)")
	f.StringVar(&s.Listen, "listen", "", "TCP address to listen on (host:port)")
	f.StringVar(&hostKey, "host-key", "", "the server's SSH host key (OpenSSH private key file)")
	f.StringVar(&authFile, "authorized", "", "authorized_keys file of the keys that may fetch or push")
	f.StringArrayVar(&repos, "repo", nil, "create this bare repository (branch main) if it does not exist; repeatable")
	f.StringVar(&s.Prefix, "prefix", gitrepo.DefaultPrefix, "the folder clients name in repository paths")
	f.StringVar(&s.Git, "git", "git", "the git binary")
	return cmd
}

// gitServerOptions gives Render the manager's Git server keys when the
// lab's repository lives on the manager (no gitops.repository): the host
// and deploy keys of gitops.GitAccess and homelab's push key, created in
// the state folder on first use.
func gitServerOptions(lab *spec.Lab, st gitops.Store) ([]render.Option, error) {
	if lab.GitOps.Repository != "" {
		return nil, nil
	}
	ga, _, err := gitops.LoadOrCreateGitAccess(st)
	if err != nil {
		return nil, err
	}
	pk, _, err := gitrepo.LoadOrCreatePushKey(st)
	if err != nil {
		return nil, err
	}
	return []render.Option{render.WithGitServer(render.GitServer{
		HostKey: ga.HostKey, HostPublic: ga.HostPublic, PushPublic: pk.Public, DeployPublic: ga.DeployPublic,
	})}, nil
}

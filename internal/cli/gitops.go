package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
)

func newGitopsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gitops",
		Short: "Write the lab's GitOps repository (Flux, infrastructure, apps)",
	}
	cmd.AddCommand(newGitopsInitCmd())
	return cmd
}

func newGitopsInitCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write the GitOps repository tree of the lab",
		Long: `init writes the lab's GitOps repository, reconciled by Flux ` + gitops.FluxVersion + `:

  clusters/<lab>/flux-system   Flux's sync (gotk-components.yaml is fetched for
                               ` + gitops.FluxVersion + ` when Flux is bootstrapped, not kept in Git)
  clusters/<lab>/*.yaml        the infrastructure and apps Flux Kustomizations
  infrastructure/controllers   ingress-nginx (public: PROXY protocol from the LB,
                               NodePorts 30080/30443; admin: admin network and VPN
                               only, NodePorts 31080/31443), cert-manager,
                               local-path-provisioner, kube-prometheus-stack,
                               VictoriaLogs
  apps                         the apps of lab.yaml (Nextcloud, OpenProject)
  .sops.yaml                   SOPS rules for the lab's age key

The same spec gives the same files. Passwords of the apps and dashboards
are generated once into the encrypted state folder (gitops-secrets), never
into the repository; so is the SOPS age key.`,
		Example: `  homelab gitops init
  homelab gitops init --out ../lab-gitops`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := cmd.Flag("file").Value.String()
			if out == "" {
				out = filepath.Join(filepath.Dir(path), "gitops")
			}
			lab, err := loadRenderLab(path, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			stateDir := filepath.Join(filepath.Dir(path), secrets.StateDirName)
			if filepath.Clean(out) == filepath.Clean(stateDir) {
				return withHint(fmt.Errorf("writing the gitops tree into %s: that is the state folder", out), "choose another folder with --out")
			}
			store, err := secrets.Open(stateDir)
			if err != nil {
				return secretsError("opening the lab's secrets", err)
			}
			recipient, newKey, err := gitops.SOPSKey(store)
			if err != nil {
				return secretsError("preparing the SOPS key", err)
			}
			_, newSecrets, err := gitops.AppSecrets(lab, store)
			if err != nil {
				return secretsError("preparing the app secrets", err)
			}
			arts, err := gitops.Tree(lab, gitops.Options{SOPSRecipient: recipient})
			if err != nil {
				return withHint(err, "check gitops in %s", path)
			}
			if _, err := render.Write(out, arts); err != nil {
				return withHint(err, "choose another folder with --out")
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote the gitops repository of lab %s into %s (Flux %s):\n", lab.Name, out, gitops.FluxVersion)
			for _, a := range arts {
				fmt.Fprintf(w, "  %s\n", a.Path)
			}
			switch {
			case newKey || newSecrets:
				fmt.Fprintf(w, "app passwords and the SOPS age key: created, encrypted, in %s\n", stateDir)
			default:
				fmt.Fprintf(w, "app passwords and the SOPS age key: reused from %s\n", stateDir)
			}
			fmt.Fprintf(w, "SOPS recipient: %s\n", recipient)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "folder to write the repository into (default: gitops beside lab.yaml)")
	return cmd
}

package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
	"github.com/homelab-dev/homelab/internal/tunnel"
)

func newGitopsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gitops",
		Short: "Write the lab's GitOps repository (Flux, infrastructure, apps)",
	}
	cmd.AddCommand(newGitopsInitCmd(), newGitopsBootstrapCmd(), newGitopsPushCmd())
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
                               NodePorts 30080/30443; admin: ports 80/443 of the
                               workers, admin network and VPN only), cert-manager,
                               local-path-provisioner, kube-prometheus-stack,
                               VictoriaLogs
  apps/<app>                    the apps of lab.yaml (Nextcloud, OpenProject)
  *.sops.yaml                  the apps' and Grafana's passwords as Secrets,
                               SOPS-encrypted with age for the lab's key
  .sops.yaml                   SOPS rules for the lab's age key

The passwords and the SOPS age key are generated once into the encrypted
state folder; the repository holds the passwords only SOPS-encrypted, and
Flux decrypts them in the cluster. The same spec and state folder give the
same files: an encrypted file is rewritten only when its Secret or the
key changes.`,
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
			arts, err := gitops.Build(lab, store)
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
			fmt.Fprintln(w, "app secrets in the repository: *.sops.yaml, SOPS-encrypted; Flux decrypts them with flux-system/sops-age")
			fmt.Fprintf(w, "SOPS recipient: %s\n", recipient)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "folder to write the repository into (default: gitops beside lab.yaml)")
	return cmd
}

func newGitopsBootstrapCmd() *cobra.Command {
	var wgConfig, via, gitIdentity, knownHosts, componentsURL, repoDir string
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Install Flux " + gitops.FluxVersion + " into the cluster and point it at the lab's repository",
		Long: `bootstrap installs Flux into the lab's cluster and makes it reconcile from
the lab's GitOps repository (see homelab gitops init):

  1. downloads Flux's install manifests for ` + gitops.FluxVersion + ` (github.com)
  2. applies them with server-side apply
  3. creates flux-system/sops-age (the lab's SOPS age key) and the Git
     credentials from the encrypted state folder; the Git credentials are
     the lab's deploy key and the manager's host key for the repository on
     the manager VM, or --git-identity and --known-hosts for a
     gitops.repository of your own. The apps' secrets are not applied:
     they are in the repository, SOPS-encrypted, and Flux decrypts them
  4. applies the repository's gotk-sync.yaml
  5. writes the install manifests into the repository folder (--repo) as
     clusters/<lab>/flux-system/gotk-components.yaml: commit and push them
     with the tree, as flux bootstrap does

homelab apply runs these steps itself (its gitops phase) and pushes the
tree with the install manifests to the manager's repository; this command
runs them alone, e.g. for a gitops.repository of your own.

It talks to the Kubernetes API with the kubeconfig stored at bootstrap,
directly when this machine is on the admin network, else through the
in-process WireGuard tunnel as homelab's own VPN peer (or the peer config
given with --wg-config, as homelab vpn peer add writes). Running it again
changes nothing.`,
		Example: `  homelab gitops bootstrap --wg-config ~/lab-laptop.conf
  homelab gitops bootstrap --via direct --git-identity deploy_key --known-hosts known_hosts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			path := cmd.Flag("file").Value.String()
			lab, err := loadRenderLab(path, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			stateDir := filepath.Join(filepath.Dir(path), secrets.StateDirName)
			store, err := secrets.Open(stateDir)
			if err != nil {
				return secretsError("opening the lab's secrets", err)
			}
			kcData, err := store.GetFile(bootstrap.FileKubeconfig)
			if errors.Is(err, fs.ErrNotExist) {
				return withHint(fmt.Errorf("bootstrapping flux: %s holds no kubeconfig yet", stateDir),
					"the kubeconfig is stored when the cluster is bootstrapped: run homelab apply first")
			}
			if err != nil {
				return secretsError("reading the kubeconfig", err)
			}
			var fo fluxOptions
			fo.ComponentsURL = componentsURL
			if gitIdentity != "" || knownHosts != "" {
				if gitIdentity == "" || knownHosts == "" {
					return withHint(errors.New("bootstrapping flux: --git-identity and --known-hosts go together"), "pass both, or neither for a public repository")
				}
				id, err := os.ReadFile(gitIdentity)
				if err != nil {
					return fmt.Errorf("bootstrapping flux: reading the git identity: %w", err)
				}
				kh, err := os.ReadFile(knownHosts)
				if err != nil {
					return fmt.Errorf("bootstrapping flux: reading known_hosts: %w", err)
				}
				fo.GitSecret = map[string][]byte{"identity": id, "known_hosts": kh}
			}
			mode, err := parseVia(via)
			if err != nil {
				return err
			}
			d, how, err := reachAdmin(ctx, lab, store, mode, wgConfig)
			if err != nil {
				return err
			}
			defer d.Close()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "reaching the admin network %s\n", how)
			b, err := bootstrapFlux(ctx, w, lab, store, d, kcData, fo)
			if err != nil {
				return err
			}
			// Flux's own sync lists gotk-components.yaml: it belongs in
			// the repository beside gotk-sync.yaml.
			if repoDir == "" {
				repoDir = filepath.Join(filepath.Dir(path), "gitops")
			}
			if fi, err := os.Stat(repoDir); err == nil && fi.IsDir() {
				p := filepath.Join(repoDir, filepath.FromSlash(gitops.ComponentsPath(lab.Name)))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return fmt.Errorf("writing %s: %w", p, err)
				}
				if err := os.WriteFile(p, b.Components, 0o644); err != nil {
					return fmt.Errorf("writing %s: %w", p, err)
				}
				fmt.Fprintf(w, "wrote %s: commit it with the tree\n", p)
			} else {
				fmt.Fprintf(w, "no repository at %s: add Flux's install manifests as %s yourself (homelab gitops init --out, then bootstrap again)\n", repoDir, gitops.ComponentsPath(lab.Name))
			}
			fmt.Fprintf(w, "flux %s installed; it reconciles the cluster from %s\n", gitops.FluxVersion, lab.GitOps.Branch)
			return nil
		},
	}
	cmd.Flags().StringVar(&wgConfig, "wg-config", "", "WireGuard peer config to reach the admin network through (wg-quick format)")
	cmd.Flags().StringVar(&via, "via", string(tunnel.ModeAuto), "how to reach the admin network: auto, direct or tunnel")
	cmd.Flags().StringVar(&gitIdentity, "git-identity", "", "SSH private key Flux pulls the repository with (deploy key)")
	cmd.Flags().StringVar(&knownHosts, "known-hosts", "", "known_hosts line(s) of the Git server")
	cmd.Flags().StringVar(&repoDir, "repo", "", "the gitops repository folder to add gotk-components.yaml to (default: gitops beside lab.yaml)")
	cmd.Flags().StringVar(&componentsURL, "components-url", "", "where to download Flux's install manifests (default: the GitHub release of "+gitops.FluxVersion+")")
	return cmd
}

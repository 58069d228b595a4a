package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/gitrepo"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/tunnel"
)

// pushTimeout bounds one push of the lab's repository.
const pushTimeout = 2 * time.Minute

func newGitopsPushCmd() *cobra.Command {
	var wgConfig, via string
	var force bool
	cmd := &cobra.Command{
		Use:   "push",
		Short: "Push the lab's repository tree to the manager's Git server",
		Long: `push builds the lab's GitOps repository (as homelab gitops init writes it,
with Flux's install manifests when Flux was bootstrapped) and pushes it as
one commit to the repository on the manager VM, as homelab apply's gitops
phase does. Nothing is pushed when the repository already holds that tree.

homelab owns the whole tree of the manager's repository: it is changed
through lab.yaml only. When someone pushed to it by hand (or from another
state folder), homelab refuses to push over their commits; --force puts
the lab's tree on top of them (their commits stay in the history, their
files are replaced) and homelab apply works again afterwards.

A gitops.repository of your own is not homelab's to push: commit the tree
of homelab gitops init there yourself.`,
		Example: `  homelab gitops push
  homelab gitops push --force --wg-config ~/lab-laptop.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			path := cmd.Flag("file").Value.String()
			lab, err := loadRenderLab(path, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := ownsRepository(lab); err != nil {
				return err
			}
			store, err := secrets.Open(filepath.Join(filepath.Dir(path), secrets.StateDirName))
			if err != nil {
				return secretsError("opening the lab's secrets", err)
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
			return gitopsPush(ctx, w, lab, store, d, force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "push even when the repository's main branch has commits homelab did not make (their files are replaced)")
	cmd.Flags().StringVar(&wgConfig, "wg-config", "", "WireGuard peer config to reach the admin network through (wg-quick format)")
	cmd.Flags().StringVar(&via, "via", string(tunnel.ModeAuto), "how to reach the admin network: auto, direct or tunnel")
	return cmd
}

// ownsRepository refuses a lab whose repository is not the manager's.
func ownsRepository(lab *spec.Lab) error {
	if lab.GitOps.Repository != "" {
		return withHint(fmt.Errorf("pushing the lab's repository: gitops.repository is %s, which homelab does not push to", lab.GitOps.Repository),
			"commit the tree of homelab gitops init to that repository yourself")
	}
	return nil
}

// gitopsPush is homelab gitops push once the admin network is reached:
// the tree, with Flux's install manifests when the state folder keeps
// them, pushed through d.
func gitopsPush(ctx context.Context, w io.Writer, lab *spec.Lab, store *secrets.Store, d tunnel.Dialer, force bool) error {
	if err := ownsRepository(lab); err != nil {
		return err
	}
	arts, err := gitopsTree(lab, store)
	if err != nil {
		return err
	}
	msg := "homelab gitops push: the lab's repository"
	comps, err := store.GetFile(fluxComponentsFile)
	switch {
	case err == nil:
		arts = append(arts, render.Artifact{Path: gitops.ComponentsPath(lab.Name), Data: comps})
		msg += " and Flux " + gitops.FluxVersion
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(w, "gitops: the state folder keeps no install manifests of Flux %s (a stand-in cluster, or Flux not bootstrapped yet): pushing the tree without them; homelab apply adds them on a real cluster\n", gitops.FluxVersion)
	default:
		return fmt.Errorf("gitops: reading the kept install manifests: %w", err)
	}
	fmt.Fprintf(w, "gitops: repository tree of %d files (Flux %s)\n", len(arts), gitops.FluxVersion)
	return pushRepository(ctx, w, lab, store, d, arts, msg, force)
}

// pushRepository is pushTree with the choice of force: with it, commits
// someone else pushed to the manager's repository are built upon (their
// files replaced) instead of refused.
func pushRepository(ctx context.Context, w io.Writer, lab *spec.Lab, store *secrets.Store, d tunnel.Dialer, arts []render.Artifact, msg string, force bool) error {
	repo, err := gitops.Repository(lab)
	if err != nil {
		return fmt.Errorf("gitops: %w", err)
	}
	access, _, err := gitops.LoadOrCreateGitAccess(store)
	if err != nil {
		return fmt.Errorf("gitops: %w", err)
	}
	key, _, err := gitrepo.LoadOrCreatePushKey(store)
	if err != nil {
		return fmt.Errorf("gitops: %w", err)
	}
	target, err := gitrepo.TargetFromURL(repo, d.DialContext, access.HostPublic, key.Key)
	if err != nil {
		return fmt.Errorf("gitops: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	res, err := gitrepo.Push(pctx, target, arts, gitrepo.Options{Message: msg, State: store, Force: force})
	if err != nil {
		var moved *gitrepo.MovedError
		if errors.As(err, &moved) {
			return withHint(fmt.Errorf("gitops: pushing to %s: %w", repo, err),
				"homelab owns the whole tree of that repository and changes it through lab.yaml only. "+
					"Keep what was pushed by hand elsewhere if you need it (lab.yaml, or a gitops.repository of your own), "+
					"then run homelab gitops push --force: it commits the lab's tree on top (the hand-made commits stay in the history, their files are replaced), and homelab apply works again")
		}
		return withHint(fmt.Errorf("gitops: pushing to %s: %w", repo, err),
			"check that the manager (%s) runs and serves Git over SSH (homelab status), then run homelab apply (or homelab gitops push) again", target.Addr)
	}
	switch {
	case res.Pushed && force && !res.Parent.IsZero():
		fmt.Fprintf(w, "gitops: pushed commit %.12s to %s on top of %.12s\n", res.Commit, repo, res.Parent)
	case res.Pushed:
		fmt.Fprintf(w, "gitops: pushed commit %.12s to %s\n", res.Commit, repo)
	default:
		fmt.Fprintf(w, "gitops: %s already holds this tree (commit %.12s)\n", repo, res.Commit)
	}
	return nil
}

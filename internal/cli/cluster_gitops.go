package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"time"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
	"github.com/homelab-dev/homelab/internal/tunnel"
)

// runGitops is apply's gitops phase: the lab's repository built (secrets
// encrypted with SOPS) and pushed to the manager's Git server through the
// same dialer as the cluster phase. On a real cluster Flux is bootstrapped
// first (its install manifests downloaded and applied, its secrets and
// sync created), then the tree is pushed with those manifests beside it,
// in one commit, as flux bootstrap does; Flux then reconciles from it. A
// stand-in cluster cannot run Flux: the tree is pushed and the phase says
// plainly that Flux is not installed.
func runGitops(ctx context.Context, w io.Writer, lc *labContext, cl *clusterRun, fo fluxOptions) error {
	lab, store := lc.Lab, lc.Store
	arts, err := gitopsTree(lab, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "gitops: repository tree of %d files (Flux %s)\n", len(arts), gitops.FluxVersion)
	ownRepo := lab.GitOps.Repository != ""
	if ownRepo {
		fmt.Fprintf(w, "gitops: gitops.repository is %s, which homelab does not push to: commit the tree of homelab gitops init there yourself\n", lab.GitOps.Repository)
	}
	if cl.res != nil && cl.res.Standin {
		if !ownRepo {
			if err := pushTree(ctx, w, lab, store, cl.dialer, arts, "homelab apply: the lab's repository"); err != nil {
				return err
			}
		}
		fmt.Fprintln(w, "gitops: Flux is NOT installed: the cluster is made of homelab stand-ins (local provider), which run no Kubernetes to install it into; the repository above is what Flux would reconcile on a real cluster")
		return nil
	}
	b, err := bootstrapFlux(ctx, w, lab, store, cl.dialer, cl.kubeconfig, fo)
	if err != nil {
		return err
	}
	if ownRepo {
		fmt.Fprintf(w, "gitops: add Flux's install manifests to your repository as %s (homelab gitops bootstrap --repo writes them)\n", gitops.ComponentsPath(lab.Name))
		return nil
	}
	// Flux's own sync lists gotk-components.yaml: it belongs in the
	// repository beside gotk-sync.yaml.
	arts = append(arts, render.Artifact{Path: gitops.ComponentsPath(lab.Name), Data: b.Components})
	return pushTree(ctx, w, lab, store, cl.dialer, arts, "homelab apply: the lab's repository and Flux "+gitops.FluxVersion)
}

// gitopsTree is the lab's repository with its secrets encrypted to the
// lab's SOPS key (gitops.Build).
func gitopsTree(lab *spec.Lab, store *secrets.Store) ([]render.Artifact, error) {
	arts, err := gitops.Build(lab, store)
	if err != nil {
		return nil, fmt.Errorf("gitops: building the repository tree: %w", err)
	}
	return arts, nil
}

// pushTree pushes arts as the whole tree of the manager's repository
// through d, with homelab's push key; nothing is pushed when the
// repository already holds that tree. Commits pushed by hand stop it
// with a hint to run homelab gitops push --force (pushRepository).
func pushTree(ctx context.Context, w io.Writer, lab *spec.Lab, store *secrets.Store, d tunnel.Dialer, arts []render.Artifact, msg string) error {
	return pushRepository(ctx, w, lab, store, d, arts, msg, false)
}

// fluxComponentsFile keeps the Flux version's install manifests in the
// state folder (not secret; encrypted like everything there).
var fluxComponentsFile = "flux-components-" + gitops.FluxVersion

// fluxOptions are the choices of a Flux bootstrap beyond the lab.
type fluxOptions struct {
	// ComponentsURL overrides where Flux's install manifests come from.
	ComponentsURL string
	// GitSecret is the data of Flux's Git credentials for a repository
	// of the user's own (identity, known_hosts); nil uses the lab's
	// deploy key for the manager's repository, and none for another
	// (public) repository.
	GitSecret map[string][]byte
}

// bootstrapFlux installs Flux into the lab's cluster through d with the
// stored kubeconfig and makes it reconcile from the lab's repository:
// install manifests, the SOPS age key and the Git credentials, then
// gotk-sync.yaml (the apps' secrets are in the repository, SOPS-encrypted). It returns the Bootstrapper, whose
// Components are the install manifests to commit beside the tree. Shared
// by apply's gitops phase and homelab gitops bootstrap.
func bootstrapFlux(ctx context.Context, w io.Writer, lab *spec.Lab, store *secrets.Store, d tunnel.Dialer, kubeconfig []byte, o fluxOptions) (*gitops.Bootstrapper, error) {
	kc, err := bootstrap.ParseKubeconfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	if _, err := url.Parse(kc.Server); err != nil {
		return nil, fmt.Errorf("bootstrapping flux: kubeconfig server: %w", err)
	}
	hc, err := kc.HTTPClient(d, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if _, _, err := gitops.SOPSKey(store); err != nil {
		return nil, fmt.Errorf("bootstrapping flux: preparing the SOPS key: %w", err)
	}
	identity, err := store.GetFile(gitops.StateFileSOPSAgeKey)
	if err != nil {
		return nil, fmt.Errorf("bootstrapping flux: reading the SOPS key: %w", err)
	}
	arts, err := gitops.Tree(lab, gitops.Options{})
	if err != nil {
		return nil, err
	}
	sync, err := gitops.SyncFile(arts)
	if err != nil {
		return nil, err
	}
	gitSecret := o.GitSecret
	if gitSecret == nil && lab.GitOps.Repository == "" {
		// The repository on the manager VM: homelab made its host key
		// and Flux's deploy key, so known_hosts is known.
		repo, err := gitops.Repository(lab)
		if err != nil {
			return nil, err
		}
		access, _, err := gitops.LoadOrCreateGitAccess(store)
		if err != nil {
			return nil, fmt.Errorf("bootstrapping flux: %w", err)
		}
		if gitSecret, err = access.FluxSecret(repo); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "flux: pulls %s with the lab's deploy key\n", repo)
	}
	b := &gitops.Bootstrapper{
		Kube: hc, Server: kc.Server, ComponentsURL: o.ComponentsURL,
		Sync: sync, SOPSIdentity: identity, GitSecret: gitSecret,
		Progress: func(format string, args ...any) { fmt.Fprintf(w, "flux: "+format+"\n", args...) },
	}
	// The install manifests of this Flux version, once downloaded, are
	// kept in the state folder: later applies neither download them again
	// nor change them in the repository.
	kept, err := store.GetFile(fluxComponentsFile)
	switch {
	case err == nil && o.ComponentsURL == "":
		b.Components = kept
		fmt.Fprintf(w, "flux: install manifests of %s from the state folder\n", gitops.FluxVersion)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("bootstrapping flux: reading the kept install manifests: %w", err)
	}
	if err := b.Run(ctx); err != nil {
		return nil, withHint(err, "run homelab apply again once the cause is fixed (Flux's bootstrap is idempotent); homelab gitops bootstrap runs this step alone")
	}
	if kept == nil || o.ComponentsURL != "" {
		if err := store.PutFile(fluxComponentsFile, b.Components); err != nil {
			return nil, fmt.Errorf("bootstrapping flux: keeping the install manifests: %w", err)
		}
	}
	fmt.Fprintf(w, "flux: %s installed; it reconciles the cluster from branch %s\n", gitops.FluxVersion, lab.GitOps.Branch)
	return b, nil
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/provider"
	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/provider/proxmox"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/vpn"
)

// labContext is a loaded lab: its spec, where it lives, its secrets and
// its rendered artifacts. Commands build one with loadLab then prepare.
type labContext struct {
	File     string
	Dir      string
	Lab      *spec.Lab
	Warnings []spec.Diagnostic
	Store    *secrets.Store
	Bundle   *secrets.Bundle
	Arts     []render.Artifact
}

// specFile returns the -f/--file flag's value.
func specFile(cmd *cobra.Command) string {
	f, _ := cmd.Flags().GetString("file")
	if f == "" {
		f = "lab.yaml"
	}
	return f
}

// loadLab reads and validates the spec named by -f, printing warnings.
func loadLab(cmd *cobra.Command) (*labContext, error) {
	file := specFile(cmd)
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		return nil, withHint(fmt.Errorf("reading the lab spec: %s does not exist", file),
			"run 'homelab init' to write a reference lab.yaml, or pass -f PATH")
	}
	lab, warnings, err := spec.Load(file)
	for _, w := range warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), w.Error())
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("the lab spec has errors:\n%w", err), "fix the lines above; 'homelab validate' checks the file without touching anything")
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("locating %s: %w", file, err)
	}
	return &labContext{File: abs, Dir: filepath.Dir(abs), Lab: lab, Warnings: warnings}, nil
}

// stateDir is the lab's state folder, beside the spec.
func (lc *labContext) stateDir() string { return filepath.Join(lc.Dir, ".homelab") }

// prepare opens the encrypted state folder (creating secrets and homelab's
// own VPN peer on first use) and renders every artifact in memory, the VPN
// server's config with the peers kept in the state folder.
func (lc *labContext) prepare(cmd *cobra.Command) error {
	store, err := secrets.Open(lc.stateDir())
	if err != nil {
		return fmt.Errorf("opening the state folder %s: %w", lc.stateDir(), err)
	}
	b, created, err := store.LoadOrCreate(lc.Lab)
	if err != nil {
		return fmt.Errorf("loading the lab's secrets: %w", err)
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), "secrets: stored encrypted in %s (identity %s)\n", store.Dir(), store.IdentityFile())
	}
	arts, err := renderLab(cmd.ErrOrStderr(), lc.Lab, store, b)
	if err != nil {
		return err
	}
	lc.Store, lc.Bundle, lc.Arts = store, b, arts
	return nil
}

// renderLab renders every artifact of the lab in memory, as apply builds
// it: homelab's own VPN peer is created first (so the apply that builds
// the VPN also tells it the peer), the VPN server's config lists the peers
// kept in the state folder, and the manager gets the Git server's keys
// when it hosts the lab's repository. Shared by apply/plan and render.
func renderLab(stderr io.Writer, lab *spec.Lab, store *secrets.Store, b *secrets.Bundle) ([]render.Artifact, error) {
	info, err := vpnLabInfo(lab, b)
	if err != nil {
		return nil, err
	}
	if _, created, err := ensureOperatorPeer(store, info); err != nil {
		return nil, err
	} else if created {
		fmt.Fprintf(stderr, "vpn: created homelab's own peer %s (it reaches the admin network through the VPN)\n", OperatorPeer)
	}
	gitOpts, err := gitServerOptions(lab, store)
	if err != nil {
		return nil, fmt.Errorf("loading the lab's git keys: %w", err)
	}
	arts, err := render.Render(lab, b, gitOpts...)
	if err != nil {
		return nil, fmt.Errorf("rendering the lab's artifacts: %w", err)
	}
	extra, err := vpn.ExtraPeers(store)
	if err != nil {
		return nil, err
	}
	return withExtraPeers(arts, extra)
}

// providerFlags are the flags every command that talks to a target takes.
type providerFlags struct {
	insecure    bool
	parallel    int
	refresh     bool
	binary      string
	purgeImages bool
}

func (f *providerFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "proxmox: skip TLS verification of the API (prints a warning; prefer caFile or fingerprint in the spec)")
	cmd.Flags().IntVar(&f.parallel, "parallel", 0, "how many steps run at once (default: 8 local, 64 proxmox)")
	cmd.Flags().BoolVar(&f.refresh, "refresh", false, "proxmox: read every guest's configuration and firewall so that hand edits show as drift (3 more API calls per guest)")
	cmd.Flags().StringVar(&f.binary, "binary", "", "proxmox: the linux/amd64 homelab binary installed into the containers (default: this one)")
}

// steps returns how many plan steps run at once for this lab's provider.
func (f providerFlags) steps(p spec.Provider) int {
	switch {
	case f.parallel > 0:
		return f.parallel
	case p == spec.ProviderProxmox:
		// Steps mostly wait on Proxmox tasks and guest boots, holding no
		// API request while they wait; the provider bounds requests in
		// flight itself (8). docs/benchmarks/proxmox.md: 64 keeps a
		// 50-guest apply within 1.06x of its critical path.
		return 64
	default:
		return 8
	}
}

// openProvider picks the lab's provider.
func (lc *labContext) openProvider(ctx context.Context, cmd *cobra.Command, f providerFlags) (provider.Provider, error) {
	switch lc.Lab.Host.Provider {
	case spec.ProviderLocal:
		return local.New(lc.Lab, lc.stateDir(), local.Options{})
	case spec.ProviderProxmox:
		return proxmox.New(ctx, lc.Lab, proxmox.Options{
			Insecure: f.insecure, Log: cmd.ErrOrStderr(),
			Refresh: f.refresh, Binary: f.binary, PurgeImages: f.purgeImages,
		})
	default:
		return nil, fmt.Errorf("host.provider %q is not one this build knows (local, proxmox)", lc.Lab.Host.Provider)
	}
}

// progressFor returns bars on a terminal and plain lines elsewhere.
func progressFor(w io.Writer, total int) (apply.Progress, func()) {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b := apply.NewBars(w)
		return b, b.Wait
	}
	return &apply.Lines{W: w, Total: total}, func() {}
}

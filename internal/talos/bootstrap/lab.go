package bootstrap

import (
	"fmt"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos"
)

// ForLab prepares the Flow of a lab: its machine configs and talosconfig
// rendered from the bundle, the Talos CA and admin certificate of the
// bundle, and the store for the kubeconfig. Set Dialer, Progress and the
// bounds on the result, then Run it.
func ForLab(lab *spec.Lab, b *secrets.Bundle, st Store) (*Flow, error) {
	configs, talosconfig, err := talos.MachineConfigs(lab, b)
	if err != nil {
		return nil, fmt.Errorf("preparing the talos bootstrap: %w", err)
	}
	nodes, err := NodesFromLab(lab, configs)
	if err != nil {
		return nil, fmt.Errorf("preparing the talos bootstrap: %w", err)
	}
	return &Flow{
		Nodes:       nodes,
		TalosCA:     b.Talos.Certs.OS.Crt,
		AdminCert:   b.TalosAdmin.Crt,
		AdminKey:    b.TalosAdmin.Key,
		Talosconfig: talosconfig,
		Store:       st,
	}, nil
}

// InstallerImage is the lab's Talos installer for upgrades: the Image
// Factory installer of the lab's schematic at its Talos version
// (factory.talos.dev/installer/<schematic>:<version>), so that an upgrade
// keeps the lab's system extensions.
func InstallerImage(lab *spec.Lab) (string, error) {
	_, id, err := talos.Schematic(lab)
	if err != nil {
		return "", err
	}
	return talos.InstallerImage(lab, id), nil
}

// Probe is the address to try first when deciding whether the admin
// network is reachable directly: the first control plane's Talos API.
func (f *Flow) Probe() string {
	if n := f.bootstrapNode(); n != nil {
		return n.Addr
	}
	return ""
}

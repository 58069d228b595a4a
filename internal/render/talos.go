package render

import (
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos"
)

// renderTalos writes the Image Factory schematic and its ID, one machine
// config per node and the talosconfig (both secret).
func renderTalos(lab *spec.Lab, b *secrets.Bundle) ([]Artifact, error) {
	schematic, id, err := talos.Schematic(lab)
	if err != nil {
		return nil, err
	}
	nodes, talosconfig, err := talos.MachineConfigs(lab, b)
	if err != nil {
		return nil, err
	}
	arts := []Artifact{
		{Path: "talos/schematic.yaml", Data: schematic},
		{Path: "talos/schematic.id", Data: []byte(id + "\n")},
		{Path: "talos/talosconfig", Data: talosconfig, Secret: true},
	}
	for _, n := range nodes {
		name, err := fileName("node", n.Machine.Name)
		if err != nil {
			return nil, err
		}
		arts = append(arts, Artifact{Path: "talos/" + name + ".yaml", Data: n.Data, Secret: true})
	}
	return arts, nil
}

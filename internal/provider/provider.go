// Package provider defines what a target (local namespaces, Proxmox VE)
// must do for the planner: list the resources a lab needs, observe the ones
// it owns, and create, update and delete them. Each implementation lives in
// its own package; the command line picks one with a plain switch.
package provider

import (
	"context"
	"io"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

// Provider builds and observes a lab on one target.
type Provider interface {
	// Desired lists every resource the lab needs on this target, with the
	// dependencies between them, from the spec and the rendered artifacts.
	Desired(lab *spec.Lab, arts []render.Artifact) ([]plan.Resource, error)
	// Observe lists the resources that exist and belong to this lab, found
	// by their marks (name prefix, tags, comments). It never reports
	// objects the lab does not own.
	Observe(ctx context.Context) ([]plan.Resource, error)
	apply.Executor
	// Close releases connections and helpers.
	Close() error
}

// Statuser is implemented by providers that can describe the running lab
// beyond its resources (processes, health of backends).
type Statuser interface {
	Status(ctx context.Context, w io.Writer) error
}

// Keeper is implemented by providers that deliberately keep some objects
// when a lab is destroyed (downloaded images, for example), so that destroy
// can say what it left and why.
type Keeper interface {
	Kept(ctx context.Context) ([]string, error)
}

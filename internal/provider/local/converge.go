package local

import (
	"context"
	"fmt"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/render"
)

// Converge observes the lab, plans the changes that make it match the
// spec and the artifacts, and runs them: what "homelab apply" does for the
// local provider. The plan is empty when nothing had to change. It is safe
// to run after any interruption (kill -9 included): every step repairs
// what an earlier run left half done.
func (p *Provider) Converge(ctx context.Context, arts []render.Artifact, opts apply.Options) (*plan.Plan, *apply.Result, error) {
	desired, err := p.Desired(p.lab, arts)
	if err != nil {
		return nil, nil, err
	}
	return p.run(ctx, desired, opts)
}

// Teardown deletes everything the lab owns: daemons, supervisor, rulesets,
// links, bridges and namespaces (what "homelab destroy" does).
func (p *Provider) Teardown(ctx context.Context, opts apply.Options) (*plan.Plan, *apply.Result, error) {
	p.mu.Lock()
	p.wanted = nil
	p.mu.Unlock()
	return p.run(ctx, nil, opts)
}

func (p *Provider) run(ctx context.Context, desired []plan.Resource, opts apply.Options) (*plan.Plan, *apply.Result, error) {
	observed, err := p.Observe(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("observing the local lab: %w", err)
	}
	pl, err := plan.Make(desired, observed, plan.Options{})
	if err != nil {
		return nil, nil, err
	}
	if pl.Empty() {
		return pl, &apply.Result{}, nil
	}
	if opts.Parallel == 0 {
		opts.Parallel = 8
	}
	res, err := apply.Run(ctx, pl, p, opts)
	return pl, res, err
}

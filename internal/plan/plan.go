// Package plan compares the resources a lab needs with the ones a provider
// observed and produces the steps that make them agree, with the
// dependencies between steps. There is no state file: what a provider owns
// is whatever it finds marked as the lab's.
package plan

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Resource is one object a provider owns, as desired or as observed.
type Resource struct {
	// Type is the provider's kind of object (bridge, lxc, vm, netns, ...).
	Type string `json:"type"`
	// Name is unique within Type.
	Name string `json:"name"`
	// Attrs are the fields compared between desired and observed. Only keys
	// present in the desired resource are compared, so a provider may
	// observe more than it manages. Values must never hold secrets: use a
	// hash of secret content instead.
	Attrs map[string]string `json:"attrs,omitempty"`
	// ForceNew names the attributes whose change needs the object to be
	// destroyed and created again.
	ForceNew []string `json:"forceNew,omitempty"`
	// DependsOn lists IDs (type/name) of resources that must exist first.
	DependsOn []string `json:"dependsOn,omitempty"`
	// HoldsData marks objects whose replacement loses user data (disks).
	HoldsData bool `json:"holdsData,omitempty"`
}

// ID is the resource's key: type/name.
func (r Resource) ID() string { return r.Type + "/" + r.Name }

// Action is what a step does.
type Action string

// The actions, in the order a plan prints them.
const (
	Create  Action = "create"
	Update  Action = "update"
	Replace Action = "replace"
	Delete  Action = "delete"
)

// Change is one attribute's difference.
type Change struct {
	Key      string `json:"key"`
	Observed string `json:"observed"`
	Desired  string `json:"desired"`
	ForceNew bool   `json:"forceNew,omitempty"`
}

// Step is one change to make.
type Step struct {
	ID     string `json:"id"`
	Action Action `json:"action"`
	// Desired is set for create, update and replace.
	Desired *Resource `json:"desired,omitempty"`
	// Observed is set for update, replace and delete.
	Observed *Resource `json:"observed,omitempty"`
	// Changes lists attribute differences (update and replace).
	Changes []Change `json:"changes,omitempty"`
	// Reason says why a replace is needed.
	Reason string `json:"reason,omitempty"`
	// Blocked, when set, says why apply will refuse this step (a replace
	// that would lose data without the explicit flag).
	Blocked string `json:"blocked,omitempty"`
	// After lists IDs of steps that must succeed before this one.
	After []string `json:"after,omitempty"`
}

// Resource returns the resource the step acts on: the desired one, or the
// observed one for a delete.
func (s *Step) Resource() Resource {
	if s.Desired != nil {
		return *s.Desired
	}
	return *s.Observed
}

// Plan is the ordered list of steps. Steps are sorted so that every step
// comes after the steps it waits for; ties are broken by ID, so the same
// inputs always give the same plan.
type Plan struct {
	Steps []Step `json:"steps"`
	// Unchanged counts resources that already match.
	Unchanged int `json:"unchanged"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Steps) == 0 }

// Options tune Make.
type Options struct {
	// AllowDataLoss lets a replace go ahead on a resource that holds data.
	AllowDataLoss bool
}

// Make computes the steps that turn observed into desired. It fails if the
// desired set is inconsistent (duplicate IDs, dependencies on resources
// that are not desired, or a dependency cycle).
func Make(desired, observed []Resource, opts Options) (*Plan, error) {
	want := map[string]*Resource{}
	var errs []error
	for i := range desired {
		r := &desired[i]
		if _, dup := want[r.ID()]; dup {
			errs = append(errs, fmt.Errorf("resource %s is declared twice", r.ID()))
			continue
		}
		want[r.ID()] = r
	}
	for _, r := range desired {
		for _, d := range r.DependsOn {
			if _, ok := want[d]; !ok {
				errs = append(errs, fmt.Errorf("resource %s depends on %s, which is not part of the lab", r.ID(), d))
			}
		}
	}
	have := map[string]*Resource{}
	for i := range observed {
		have[observed[i].ID()] = &observed[i]
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	p := &Plan{}
	steps := map[string]*Step{}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		d := want[id]
		o, ok := have[id]
		if !ok {
			steps[id] = &Step{ID: id, Action: Create, Desired: d}
			continue
		}
		changes := diff(d, o)
		if len(changes) == 0 {
			p.Unchanged++
			continue
		}
		s := &Step{ID: id, Action: Update, Desired: d, Observed: o, Changes: changes}
		var forced []string
		for _, c := range changes {
			if c.ForceNew {
				forced = append(forced, c.Key)
			}
		}
		if len(forced) > 0 {
			s.Action = Replace
			s.Reason = fmt.Sprintf("%s cannot change in place", strings.Join(forced, ", "))
			if d.HoldsData && !opts.AllowDataLoss {
				s.Blocked = fmt.Sprintf("replacing %s would erase its disks; re-run with --allow-data-loss if that is what you want", id)
			}
		}
		steps[id] = s
	}
	for _, id := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[id]; !ok {
			steps[id] = &Step{ID: id, Action: Delete, Observed: have[id]}
		}
	}

	// Dependencies. A create, update or replace waits for the steps of
	// what it depends on. A delete waits for the deletes of what depends
	// on it (observed dependencies), and for replaces of its dependents,
	// which must let go of it first.
	for _, s := range steps {
		switch s.Action {
		case Create, Update, Replace:
			for _, d := range s.Desired.DependsOn {
				if _, ok := steps[d]; ok {
					s.After = append(s.After, d)
				}
			}
		case Delete:
			for _, o := range steps {
				if o.ID == s.ID || (o.Action != Delete && o.Action != Replace) || o.Observed == nil {
					continue
				}
				if slices.Contains(o.Observed.DependsOn, s.ID) {
					s.After = append(s.After, o.ID)
				}
			}
		}
		slices.Sort(s.After)
		s.After = slices.Compact(s.After)
	}

	order, err := topo(steps)
	if err != nil {
		return nil, err
	}
	for _, id := range order {
		p.Steps = append(p.Steps, *steps[id])
	}
	return p, nil
}

// diff compares the attributes the desired resource declares.
func diff(d, o *Resource) []Change {
	var out []Change
	for _, k := range slices.Sorted(maps.Keys(d.Attrs)) {
		if ov := o.Attrs[k]; ov != d.Attrs[k] {
			out = append(out, Change{Key: k, Observed: ov, Desired: d.Attrs[k], ForceNew: slices.Contains(d.ForceNew, k)})
		}
	}
	return out
}

// topo orders steps so that each comes after those in its After list,
// choosing the smallest ID among the ready ones for determinism.
func topo(steps map[string]*Step) ([]string, error) {
	indeg := map[string]int{}
	next := map[string][]string{}
	for id, s := range steps {
		indeg[id] += 0
		for _, a := range s.After {
			indeg[id]++
			next[a] = append(next[a], id)
		}
	}
	var ready, order []string
	for id, n := range indeg {
		if n == 0 {
			ready = append(ready, id)
		}
	}
	for len(ready) > 0 {
		slices.Sort(ready)
		id := ready[0]
		ready = ready[1:]
		order = append(order, id)
		for _, n := range next[id] {
			indeg[n]--
			if indeg[n] == 0 {
				ready = append(ready, n)
			}
		}
	}
	if len(order) != len(steps) {
		var stuck []string
		for id, n := range indeg {
			if n > 0 {
				stuck = append(stuck, id)
			}
		}
		slices.Sort(stuck)
		return nil, fmt.Errorf("resources depend on each other in a cycle: %s", strings.Join(stuck, ", "))
	}
	return order, nil
}

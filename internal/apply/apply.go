// Package apply runs a plan: each step as soon as the steps it waits for
// have succeeded, several at a time, with retries of transient failures and
// progress reports. A step that fails stops only the steps that need it;
// everything else still runs, so that a later run has less to do.
// Re-running apply after any failure converges, because plans are computed
// from live state.
package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homelab-dev/homelab/internal/plan"
)

// Executor carries out steps on a target. The provider packages implement it.
type Executor interface {
	Create(ctx context.Context, r plan.Resource) error
	Update(ctx context.Context, desired, observed plan.Resource) error
	Delete(ctx context.Context, r plan.Resource) error
}

// Options tune Run. The zero value works: 4 steps at once, 3 attempts for
// transient errors, no progress output.
type Options struct {
	// Parallel is how many steps run at once (default 4).
	Parallel int
	// Attempts is how many times a step that failed with a Transient
	// error is tried in all (default 3).
	Attempts int
	// Backoff is the wait before the second attempt; it doubles after
	// each (default 1s).
	Backoff time.Duration
	// Progress receives step events (may be nil).
	Progress Progress
}

// Progress is told about steps as they start and end. Implementations must
// be safe for concurrent use.
type Progress interface {
	Start(s plan.Step)
	// Update reports progress within a step (fraction in [0,1], a short
	// message), sent by the executor through Report.
	Update(id string, fraction float64, msg string)
	Done(s plan.Step, err error, took time.Duration)
}

// Result says what happened to each step.
type Result struct {
	Done    []string
	Failed  map[string]error
	Skipped []string // not run because a step they wait for failed
	Elapsed time.Duration
}

// transient marks errors worth retrying.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

// Transient marks err as worth retrying (a 5xx, a timeout, a dropped
// connection). Errors not marked are final.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transient{err}
}

// IsTransient reports whether err was marked with Transient.
func IsTransient(err error) bool {
	var t transient
	return errors.As(err, &t)
}

type reportKey struct{}

type reporter struct {
	id string
	p  Progress
}

// Report lets an executor tell the progress display how far a step is.
// It does nothing when the context does not come from Run.
func Report(ctx context.Context, fraction float64, msg string) {
	if r, ok := ctx.Value(reportKey{}).(reporter); ok && r.p != nil {
		r.p.Update(r.id, fraction, msg)
	}
}

// Run executes the plan's steps along their dependencies. It returns an
// error naming every failed and skipped step when anything failed; steps
// marked Blocked are refused before anything runs.
func Run(ctx context.Context, p *plan.Plan, ex Executor, opts Options) (*Result, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	var blocked []string
	for _, s := range p.Steps {
		if s.Blocked != "" {
			blocked = append(blocked, s.Blocked)
		}
	}
	if len(blocked) > 0 {
		return nil, fmt.Errorf("refusing to apply: %s", strings.Join(blocked, "; "))
	}

	start := time.Now()
	res := &Result{Failed: map[string]error{}}
	var mu sync.Mutex
	state := map[string]string{} // id -> pending|running|done|failed|skipped
	byID := map[string]plan.Step{}
	for _, s := range p.Steps {
		state[s.ID] = "pending"
		byID[s.ID] = s
	}
	sem := make(chan struct{}, opts.Parallel)
	finished := make(chan struct{}, len(p.Steps))
	var wg sync.WaitGroup

	// schedule starts every pending step whose prerequisites are done and
	// marks as skipped those whose prerequisites failed. Called with mu held.
	var schedule func()
	schedule = func() {
		progress := true
		for progress {
			progress = false
			for _, s := range p.Steps {
				if state[s.ID] != "pending" {
					continue
				}
				ready, dead := true, false
				for _, a := range s.After {
					switch state[a] {
					case "done":
					case "failed", "skipped":
						dead = true
					default:
						ready = false
					}
				}
				if dead {
					state[s.ID] = "skipped"
					res.Skipped = append(res.Skipped, s.ID)
					progress = true
					finished <- struct{}{}
					continue
				}
				if !ready {
					continue
				}
				state[s.ID] = "running"
				wg.Add(1)
				go func(s plan.Step) {
					defer wg.Done()
					sem <- struct{}{}
					err := runStep(ctx, ex, s, opts)
					<-sem
					mu.Lock()
					if err != nil {
						state[s.ID] = "failed"
						res.Failed[s.ID] = err
					} else {
						state[s.ID] = "done"
						res.Done = append(res.Done, s.ID)
					}
					schedule()
					mu.Unlock()
					finished <- struct{}{}
				}(s)
			}
		}
	}
	mu.Lock()
	schedule()
	mu.Unlock()
	for range p.Steps {
		<-finished
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	slices.Sort(res.Done)
	slices.Sort(res.Skipped)
	if len(res.Failed) == 0 {
		return res, nil
	}
	var b strings.Builder
	ids := make([]string, 0, len(res.Failed))
	for id := range res.Failed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	fmt.Fprintf(&b, "%d of %d steps failed", len(ids), len(p.Steps))
	for _, id := range ids {
		fmt.Fprintf(&b, "\n  %s %s: %v", byID[id].Action, id, res.Failed[id])
	}
	if len(res.Skipped) > 0 {
		fmt.Fprintf(&b, "\n  not started because of those: %s", strings.Join(res.Skipped, ", "))
	}
	fmt.Fprintf(&b, "\n%d steps succeeded and are kept; fix the cause and run apply again to converge", len(res.Done))
	return res, errors.New(b.String())
}

func runStep(ctx context.Context, ex Executor, s plan.Step, opts Options) error {
	if opts.Progress != nil {
		opts.Progress.Start(s)
	}
	sctx := context.WithValue(ctx, reportKey{}, reporter{id: s.ID, p: opts.Progress})
	t0 := time.Now()
	var err error
	wait := opts.Backoff
	for attempt := 1; ; attempt++ {
		if err = ctx.Err(); err != nil {
			break
		}
		switch s.Action {
		case plan.Create:
			err = ex.Create(sctx, *s.Desired)
		case plan.Update:
			err = ex.Update(sctx, *s.Desired, *s.Observed)
		case plan.Replace:
			if err = ex.Delete(sctx, *s.Observed); err == nil {
				err = ex.Create(sctx, *s.Desired)
			}
		case plan.Delete:
			err = ex.Delete(sctx, *s.Observed)
		default:
			err = fmt.Errorf("unknown action %q", s.Action)
		}
		if err == nil || !IsTransient(err) || attempt >= opts.Attempts {
			break
		}
		if opts.Progress != nil {
			opts.Progress.Update(s.ID, 0, fmt.Sprintf("retrying in %s after: %v", wait, err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
	if opts.Progress != nil {
		opts.Progress.Done(s, err, time.Since(t0))
	}
	return err
}

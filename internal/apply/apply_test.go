package apply

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/plan"
)

// fake is an in-memory target: a set of existing resource IDs, with
// optional failures and a record of the order of operations.
type fake struct {
	mu       sync.Mutex
	have     map[string]bool
	log      []string
	fail     map[string]error // id -> error returned on every attempt
	flaky    map[string]int   // id -> transient failures before success
	running  atomic.Int32
	maxSeen  atomic.Int32
	duration time.Duration
}

func newFake() *fake {
	return &fake{have: map[string]bool{}, fail: map[string]error{}, flaky: map[string]int{}}
}

func (f *fake) op(ctx context.Context, verb, id string, exists bool) error {
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(f.duration)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, verb+" "+id)
	if err := f.fail[id]; err != nil {
		return err
	}
	if f.flaky[id] > 0 {
		f.flaky[id]--
		return Transient(errors.New("503 service unavailable"))
	}
	f.have[id] = exists
	return nil
}

func (f *fake) Create(ctx context.Context, r plan.Resource) error {
	return f.op(ctx, "create", r.ID(), true)
}
func (f *fake) Update(ctx context.Context, d, o plan.Resource) error {
	return f.op(ctx, "update", d.ID(), true)
}
func (f *fake) Delete(ctx context.Context, r plan.Resource) error {
	return f.op(ctx, "delete", r.ID(), false)
}

func chain() []plan.Resource {
	return []plan.Resource{
		{Type: "bridge", Name: "b"},
		{Type: "vm", Name: "v1", DependsOn: []string{"bridge/b"}},
		{Type: "vm", Name: "v2", DependsOn: []string{"bridge/b"}},
		{Type: "fw", Name: "f", DependsOn: []string{"vm/v1"}},
		{Type: "other", Name: "o"},
	}
}

func indexOf(log []string, s string) int {
	for i, l := range log {
		if l == s {
			return i
		}
	}
	return -1
}

func TestRunOrderAndParallel(t *testing.T) {
	p, err := plan.Make(chain(), nil, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.duration = 20 * time.Millisecond
	res, err := Run(context.Background(), p, f, Options{Parallel: 2})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Done) != 5 {
		t.Errorf("done = %v, want 5 steps", res.Done)
	}
	for _, pair := range [][2]string{{"create bridge/b", "create vm/v1"}, {"create bridge/b", "create vm/v2"}, {"create vm/v1", "create fw/f"}} {
		if indexOf(f.log, pair[0]) > indexOf(f.log, pair[1]) {
			t.Errorf("%q ran after %q; log %v", pair[0], pair[1], f.log)
		}
	}
	if m := f.maxSeen.Load(); m > 2 {
		t.Errorf("saw %d steps at once, want at most 2", m)
	}
	if m := f.maxSeen.Load(); m < 2 {
		t.Errorf("saw at most %d step at once, want independent steps to overlap", m)
	}
}

func TestRunFailureSkipsDependentsOnly(t *testing.T) {
	p, _ := plan.Make(chain(), nil, plan.Options{})
	f := newFake()
	f.fail["vm/v1"] = errors.New("task failed: out of memory")
	res, err := Run(context.Background(), p, f, Options{})
	if err == nil {
		t.Fatal("Run succeeded, want an error")
	}
	for _, want := range []string{"1 of 5 steps failed", "create vm/v1: task failed: out of memory", "not started because of those: fw/f", "run apply again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !f.have["vm/v2"] || !f.have["other/o"] {
		t.Errorf("independent steps did not run: %v", f.have)
	}
	if f.have["fw/f"] {
		t.Error("dependent step ran after its prerequisite failed")
	}
	if len(res.Skipped) != 1 || res.Skipped[0] != "fw/f" {
		t.Errorf("Skipped = %v, want [fw/f]", res.Skipped)
	}

	// A second run, from what is there now, converges.
	delete(f.fail, "vm/v1")
	var observed []plan.Resource
	for _, r := range chain() {
		if f.have[r.ID()] {
			observed = append(observed, r)
		}
	}
	p2, _ := plan.Make(chain(), observed, plan.Options{})
	if got := len(p2.Steps); got != 2 {
		t.Errorf("second plan has %d steps, want 2 (v1 and f)", got)
	}
	if _, err := Run(context.Background(), p2, f, Options{}); err != nil {
		t.Errorf("second Run: %v", err)
	}
}

func TestRunRetriesTransient(t *testing.T) {
	p, _ := plan.Make([]plan.Resource{{Type: "vm", Name: "a"}}, nil, plan.Options{})
	f := newFake()
	f.flaky["vm/a"] = 2
	if _, err := Run(context.Background(), p, f, Options{Backoff: time.Millisecond}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := len(f.log); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}

	f.flaky["vm/a"] = 5
	f.have = map[string]bool{}
	f.log = nil
	_, err := Run(context.Background(), p, f, Options{Backoff: time.Millisecond, Attempts: 2})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Run error = %v, want the transient error after the last attempt", err)
	}
	if got := len(f.log); got != 2 {
		t.Errorf("%d attempts, want 2", got)
	}
}

func TestRunRefusesBlocked(t *testing.T) {
	d := plan.Resource{Type: "vm", Name: "a", Attrs: map[string]string{"disk": "2"}, ForceNew: []string{"disk"}, HoldsData: true}
	o := plan.Resource{Type: "vm", Name: "a", Attrs: map[string]string{"disk": "1"}}
	p, _ := plan.Make([]plan.Resource{d}, []plan.Resource{o}, plan.Options{})
	f := newFake()
	_, err := Run(context.Background(), p, f, Options{})
	if err == nil || !strings.Contains(err.Error(), "--allow-data-loss") {
		t.Errorf("Run error = %v, want a refusal naming --allow-data-loss", err)
	}
	if len(f.log) != 0 {
		t.Errorf("ran %v, want nothing", f.log)
	}
}

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Start(s plan.Step) { r.add("start " + s.ID) }
func (r *recorder) Update(id string, f float64, msg string) {
	r.add("update " + id + " " + msg)
}
func (r *recorder) Done(s plan.Step, err error, _ time.Duration) { r.add("done " + s.ID) }
func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

type reportingExec struct{ *fake }

func (e reportingExec) Create(ctx context.Context, r plan.Resource) error {
	Report(ctx, 0.5, "downloading")
	return e.fake.Create(ctx, r)
}

func TestProgressEvents(t *testing.T) {
	p, _ := plan.Make([]plan.Resource{{Type: "vm", Name: "a"}}, nil, plan.Options{})
	rec := &recorder{}
	if _, err := Run(context.Background(), p, reportingExec{newFake()}, Options{Progress: rec}); err != nil {
		t.Fatal(err)
	}
	want := []string{"start vm/a", "update vm/a downloading", "done vm/a"}
	if strings.Join(rec.events, "|") != strings.Join(want, "|") {
		t.Errorf("events = %v, want %v", rec.events, want)
	}
}

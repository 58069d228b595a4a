// Command proxmox benchmarks the Proxmox provider against the simulator
// with realistic task latencies (scaled down so the run is short, reported
// scaled back up): apply wall time against the critical path of the plan's
// dependency graph, and the API calls of a no-op plan for a 50-guest lab.
// It writes docs/benchmarks/proxmox.md.
//
//	go run ./bench/proxmox [-scale 0.2] [-o docs/benchmarks/proxmox.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider/proxmox"
	"github.com/homelab-dev/homelab/internal/pvesim"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

// Realistic durations on a small Proxmox host.
var latency = map[string]time.Duration{
	"download":  20 * time.Second, // image or template download
	"qmcreate":  2 * time.Second,  // VM creation with a disk import
	"vzcreate":  2 * time.Second,  // container creation from a template
	"qmstart":   1 * time.Second,
	"vzstart":   1 * time.Second,
	"qmstop":    1 * time.Second,
	"vzstop":    1 * time.Second,
	"qmdestroy": 1 * time.Second,
	"vzdestroy": 1 * time.Second,
	"srvreload": 2 * time.Second, // ifreload -a
	"resize":    500 * time.Millisecond,
	"imgdel":    200 * time.Millisecond,
}

const (
	agentBoot   = 8 * time.Second       // from start to the guest agent answering
	callLatency = 15 * time.Millisecond // every API round trip
)

func main() {
	scale := flag.Float64("scale", 0.25, "time scale of the simulator (0.25: four times faster than real)")
	out := flag.String("o", "docs/benchmarks/proxmox.md", "report file")
	parallel := flag.Int("parallel", 8, "steps applied at once")
	flag.Parse()
	if err := run(*scale, *parallel, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench/proxmox:", err)
		os.Exit(1)
	}
}

type result struct {
	name          string
	guests, steps int
	wall, crit    time.Duration
	// model is the critical path with each step weighted by the
	// simulated latencies it must wait for (API round trips left out).
	model        time.Duration
	pathSteps    []string
	path         []string
	planCalls    int
	planCallsNew int
	// configReads are per-guest config reads Observe makes only when the
	// API reports no disk size (maxdisk) in /cluster/resources.
	configReads int
	parallel    int
	// leftSteps is the size of the plan after apply (0: converged).
	leftSteps      int
	violations     int
	firstViolation string
}

func run(scale float64, parallel int, out string) error {
	var results []result
	for _, c := range []struct {
		name     string
		lab      func() (*spec.Lab, error)
		parallel int
	}{
		{"reference lab", func() (*spec.Lab, error) { return parse(spec.Reference(spec.ProviderProxmox)) }, parallel},
		{"50-guest lab", bigLab, parallel},
		{"50-guest lab", bigLab, 64},
	} {
		lab, err := c.lab()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		r, err := measure(c.name, lab, scale, c.parallel)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%s (%d at once): %d guests, %d steps, apply %s, critical path %s measured (x%.3f), %s modeled (x%.3f), no-op plan %d calls\n",
			r.name, r.parallel, r.guests, r.steps, r.wall.Round(time.Millisecond), r.crit.Round(time.Millisecond), ratio(r.wall, r.crit),
			r.model.Round(time.Millisecond), ratio(r.wall, r.model), r.planCalls)
	}
	return write(out, scale, results)
}

func parse(src []byte) (*spec.Lab, error) {
	lab, _, err := spec.Parse("lab.yaml", src)
	return lab, err
}

// bigLab is the reference lab grown to 50 guests: VPN, LB, manager, 3
// control planes and 44 workers, on a host big enough for the budget.
func bigLab() (*spec.Lab, error) {
	src := string(spec.Reference(spec.ProviderProxmox))
	src = strings.Replace(src, "  memory: 16GiB\n  disk: 500GiB\n  cores: 4\n", "  memory: 1TiB\n  disk: 20TiB\n  cores: 256\n", 1)
	lab, _, err := spec.Parse("lab.yaml", []byte(src))
	if lab == nil {
		return nil, err
	}
	_ = err // the reference's budget warnings do not matter here
	src = strings.Replace(src, "controlPlanes:\n    count: 1", "controlPlanes:\n    count: 3", 1)
	src = strings.Replace(src, "workers:\n    count: 2", "workers:\n    count: 44", 1)
	lab, _, err = spec.Parse("lab.yaml", []byte(src))
	if err != nil {
		return nil, err
	}
	if n := len(lab.Machines()); n != 50 {
		return nil, fmt.Errorf("the big lab has %d guests, want 50 (did the reference lab change?)", n)
	}
	return lab, nil
}

// stepTimes records how long each step took.
type stepTimes struct {
	mu   sync.Mutex
	took map[string]time.Duration
}

func (s *stepTimes) Start(plan.Step)                {}
func (s *stepTimes) Update(string, float64, string) {}
func (s *stepTimes) Done(st plan.Step, _ error, d time.Duration) {
	s.mu.Lock()
	s.took[st.ID] = d
	s.mu.Unlock()
}

func measure(name string, lab *spec.Lab, scale float64, parallel int) (result, error) {
	lat := map[string]time.Duration{}
	for k, v := range latency {
		lat[k] = v
	}
	srv, err := pvesim.NewServer(pvesim.Options{TimeScale: scale, TaskLatency: lat, AgentBootDelay: agentBoot})
	if err != nil {
		return result{}, err
	}
	defer srv.Close()
	srv.SetCallLatency("*", "", callLatency)
	lab.Host.Proxmox.Endpoint = srv.URL
	lab.Host.Proxmox.TokenID = srv.TokenID
	shell := proxmox.NewMemShell()
	shell.OnWrite = func(path string, data []byte) {
		if n, ok := strings.CutPrefix(path, "/var/lib/vz/snippets/"); ok {
			srv.AddVolume(pvesim.Volume{VolID: "local:snippets/" + n, Content: "snippets", Size: int64(len(data))})
		}
	}
	bin := filepath.Join(os.TempDir(), "homelab-bench-binary")
	// The running executable: a linux/amd64 binary like the one the
	// containers get.
	exe, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		return result{}, err
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		return result{}, err
	}
	defer os.Remove(bin)
	// TLS as in production: the simulator's certificate as the CA file.
	ca := filepath.Join(os.TempDir(), "homelab-bench-pvesim-ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o644); err != nil {
		return result{}, err
	}
	defer os.Remove(ca)
	lab.Host.Proxmox.CAFile = ca
	ctx := context.Background()
	opts := proxmox.Options{Token: srv.TokenSecret, Shell: shell, Binary: bin,
		Poll: time.Duration(float64(500*time.Millisecond) * scale), Log: io.Discard, Parallel: 8}
	p, err := proxmox.New(ctx, lab, opts)
	if err != nil {
		return result{}, err
	}
	defer p.Close()
	arts := artifacts(lab)

	desired, err := p.Desired(lab, arts)
	if err != nil {
		return result{}, err
	}
	observed, err := p.Observe(ctx)
	if err != nil {
		return result{}, err
	}
	pl, err := plan.Make(desired, observed, plan.Options{})
	if err != nil {
		return result{}, err
	}
	times := &stepTimes{took: map[string]time.Duration{}}
	res, err := apply.Run(ctx, pl, p, apply.Options{Parallel: parallel, Progress: times})
	if err != nil {
		return result{}, fmt.Errorf("apply: %w", err)
	}
	r := result{name: name, guests: len(lab.Machines()), steps: len(pl.Steps), parallel: parallel}
	r.wall = unscale(res.Elapsed, scale)
	crit, path := criticalPath(pl, times.took)
	r.crit, r.path = unscale(crit, scale), path
	model := map[string]time.Duration{}
	for _, s := range pl.Steps {
		model[s.ID] = modeled(s)
	}
	r.model, _ = criticalPath(pl, model)
	for _, id := range path {
		r.pathSteps = append(r.pathSteps, fmt.Sprintf("%s %s (model %s)", id, unscale(times.took[id], scale).Round(100*time.Millisecond), model[id]))
	}

	// A no-op plan: a fresh provider (New), Desired, Observe.
	srv.ResetCalls()
	p2, err := proxmox.New(ctx, lab, opts)
	if err != nil {
		return result{}, err
	}
	defer p2.Close()
	r.planCallsNew = srv.CallCount()
	if _, err := p2.Desired(lab, arts); err != nil {
		return result{}, err
	}
	obs2, err := p2.Observe(ctx)
	if err != nil {
		return result{}, err
	}
	r.planCalls = srv.CallCount()
	for k, n := range srv.CallCounts() {
		if strings.HasSuffix(k, "/{vmid}/config") {
			r.configReads += n
		}
	}
	pl2, err := plan.Make(desired, obs2, plan.Options{})
	if err != nil {
		return result{}, err
	}
	r.leftSteps = len(pl2.Steps)
	if v := srv.Violations(); len(v) > 0 {
		r.violations = len(v)
		r.firstViolation = v[0].String()
	}
	return r, nil
}

// criticalPath is the longest chain of the plan's dependency graph, each
// step weighted by the time it took.
func criticalPath(pl *plan.Plan, took map[string]time.Duration) (time.Duration, []string) {
	finish := map[string]time.Duration{}
	prev := map[string]string{}
	var best time.Duration
	var last string
	for _, s := range pl.Steps { // steps come after what they wait for
		var start time.Duration
		for _, a := range s.After {
			if finish[a] > start {
				start, prev[s.ID] = finish[a], a
			}
		}
		finish[s.ID] = start + took[s.ID]
		if finish[s.ID] > best {
			best, last = finish[s.ID], s.ID
		}
	}
	var path []string
	for id := last; id != ""; id = prev[id] {
		path = append([]string{id}, path...)
	}
	return best, path
}

// modeled is the least time a step can take: the tasks and boots it waits
// for, at the latencies above.
func modeled(s plan.Step) time.Duration {
	typ, _, _ := strings.Cut(s.ID, "/")
	r := s.Resource()
	switch typ {
	case "image", "template":
		return latency["download"]
	case "network-apply":
		return latency["srvreload"]
	case "vm":
		return latency["qmcreate"] + latency["resize"]
	case "lxc":
		return latency["vzcreate"]
	case "start":
		if r.Attrs["kind"] == "lxc" || strings.HasSuffix(r.Name, "-vpn") || strings.HasSuffix(r.Name, "-lb") {
			return latency["vzstart"]
		}
		return latency["qmstart"] + agentBoot
	}
	return 0
}

func unscale(d time.Duration, scale float64) time.Duration {
	return time.Duration(float64(d) / scale)
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// artifacts stands in for render's output with the paths the provider
// reads (the contents do not matter to the API).
func artifacts(lab *spec.Lab) []render.Artifact {
	arts := []render.Artifact{
		{Path: "talos/schematic.id", Data: []byte("376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n")},
		{Path: "cloud-init/manager/user-data", Data: []byte("#cloud-config\n")},
		{Path: "lb/lb.yaml", Data: []byte("frontends: []\n")},
		{Path: "wireguard/server.conf", Data: []byte("[Interface]\n"), Secret: true},
	}
	for _, m := range lab.Machines() {
		if m.Role == spec.MachineControlPlane || m.Role == spec.MachineWorker {
			arts = append(arts, render.Artifact{Path: "talos/" + m.Name + ".yaml", Data: []byte("machine: {}\n"), Secret: true})
		}
	}
	return arts
}

func write(out string, scale float64, rs []result) error {
	var b strings.Builder
	b.WriteString("# Proxmox provider benchmark\n\n")
	b.WriteString("Generated by `go run ./bench/proxmox`: the provider applies a lab to the\n")
	b.WriteString("schema-checked simulator (`internal/pvesim`) with realistic task latencies,\n")
	fmt.Fprintf(&b, "run %.0fx faster (time scale %.2f) and reported scaled back to real time.\n\n", 1/scale, scale)
	b.WriteString("Latencies: image or template download 20 s, VM or container creation 2 s,\n")
	fmt.Fprintf(&b, "start/stop/destroy 1 s, network reload 2 s, disk resize 0.5 s, guest agent\n")
	fmt.Fprintf(&b, "up %s after start, %s per API round trip.\n\n", agentBoot, callLatency)
	b.WriteString("\"Steps at once\" is apply's parallelism; the provider itself never has more\n")
	b.WriteString("than 8 API requests in flight, and a step waiting for a task or a guest\n")
	b.WriteString("agent holds none, so a high value is safe on a real host.\n\n")
	b.WriteString("The critical path is the longest chain of the plan's dependency graph. It is\n")
	b.WriteString("weighted two ways: by the latencies each step must wait for (modeled: the\n")
	b.WriteString("tasks and guest boots above, API round trips left out), and by the time each\n")
	b.WriteString("step took in this run (measured: no scheduler could have finished sooner with\n")
	b.WriteString("these step times). wall / modeled is the figure of merit; wall / measured\n")
	b.WriteString("isolates the scheduling.\n")
	b.WriteString("The acceptance bar is apply wall time ≤ 1.15 × critical path, and ≤ 50 API\n")
	b.WriteString("calls for a no-op plan of a 50-guest lab.\n\n")
	b.WriteString("| lab | guests | steps | steps at once | apply wall time | critical path, modeled | wall / modeled | critical path, measured | wall / measured | no-op plan: API calls | of which connecting | of which per-guest config reads | plan after apply | schema violations |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		left := "empty"
		if r.leftSteps > 0 {
			left = fmt.Sprintf("%d steps", r.leftSteps)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | **%.3f** | %s | %.3f | **%d** | %d | %d | %s | %d |\n", r.name, r.guests, r.steps, r.parallel,
			r.wall.Round(100*time.Millisecond), r.model.Round(100*time.Millisecond), ratio(r.wall, r.model),
			r.crit.Round(100*time.Millisecond), ratio(r.wall, r.crit), r.planCalls, r.planCallsNew, r.configReads, left, r.violations)
	}
	b.WriteString("\nObserve reads every guest with one call (`/cluster/resources`), whatever\n")
	b.WriteString("their number. The simulator reports no disk size there (`maxdisk` 0, where\n")
	b.WriteString("Proxmox VE reports the boot disk's), so Observe lists the guest storage\n")
	b.WriteString("once more to see disk drift; a per-guest config read is the last resort\n")
	b.WriteString("(last column but two).\n")
	for _, r := range rs {
		if r.violations > 0 {
			fmt.Fprintf(&b, "\nFirst schema violation (%s): `%s`\n", r.name, r.firstViolation)
			break
		}
	}
	b.WriteString("\nCritical paths:\n\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s, %d at once: %s\n", r.name, r.parallel, strings.Join(r.pathSteps, " → "))
	}
	load := "unknown"
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(l))[:3], " ")
	}
	fmt.Fprintf(&b, "\nMachine: %s/%s, %d CPUs, %s, load average at the end %s (the simulator, the\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), load)
	b.WriteString("provider and TLS share these CPUs, so a busy machine stretches the 50-guest runs).\n")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

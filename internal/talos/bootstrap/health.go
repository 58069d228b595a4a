package bootstrap

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"

	"github.com/homelab-dev/homelab/internal/kubeapi"
)

// Status is the outcome of one health check.
type Status string

// Outcomes of a check. Skipped means it could not be checked (a stand-in
// serves no such thing), and says why.
const (
	OK      Status = "ok"
	Failed  Status = "FAIL"
	Skipped Status = "skip"
)

// Check is one health check's outcome.
type Check struct {
	Name   string
	Status Status
	Detail string
}

// Report is the outcome of every health check of one round.
type Report struct {
	Checks []Check
	// Standin notes that the nodes are homelab stand-ins.
	Standin bool
}

// Healthy reports whether no check failed.
func (r *Report) Healthy() bool {
	return r != nil && !slices.ContainsFunc(r.Checks, func(c Check) bool { return c.Status == Failed })
}

// Failed lists the checks that failed.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == Failed {
			out = append(out, c)
		}
	}
	return out
}

// String prints the report as aligned lines.
func (r *Report) String() string {
	var b strings.Builder
	if r.Standin {
		b.WriteString("cluster health (the nodes are homelab stand-ins, not Talos: only what they serve was checked)\n")
	} else {
		b.WriteString("cluster health\n")
	}
	w := 0
	for _, c := range r.Checks {
		w = max(w, len(c.Name))
	}
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-4s  %-*s  %s\n", c.Status, w, c.Name, c.Detail)
	}
	return b.String()
}

// WaitHealthy runs the health checks until they all pass or
// HealthTimeout ends, and returns the last report; the error names what
// is still unhealthy.
func (f *Flow) WaitHealthy(ctx context.Context, kubeconfig []byte, standin bool) (*Report, error) {
	timeout := orDefault(f.HealthTimeout, DefaultHealthTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		rep := f.Health(wctx, kubeconfig, standin)
		if rep.Healthy() {
			f.progress("cluster healthy")
			return rep, nil
		}
		select {
		case <-wctx.Done():
			// The round cut by the deadline may blame the deadline: run
			// a last round on the parent context for a fair report.
			if ctx.Err() == nil {
				lctx, lcancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
				rep = f.Health(lctx, kubeconfig, standin)
				lcancel()
				if rep.Healthy() {
					return rep, nil
				}
			}
			var names []string
			for _, c := range rep.Failed() {
				names = append(names, c.Name+": "+c.Detail)
			}
			return rep, fmt.Errorf("the cluster is not healthy after %s: %s", timeout, strings.Join(names, "; "))
		case <-time.After(orDefault(f.PollInterval, DefaultPollInterval)):
		}
	}
}

// Health runs every check once.
func (f *Flow) Health(ctx context.Context, kubeconfig []byte, standin bool) *Report {
	rep := &Report{Standin: standin}
	add := func(name string, st Status, format string, args ...any) {
		rep.Checks = append(rep.Checks, Check{Name: name, Status: st, Detail: fmt.Sprintf(format, args...)})
	}
	bn := f.bootstrapNode()
	var cps []string
	for _, n := range f.Nodes {
		if n.ControlPlane {
			cps = append(cps, n.Name)
		}
	}

	// Talos side: every node's API and services.
	for i := range f.Nodes {
		n := &f.Nodes[i]
		f.talosChecks(ctx, n, n == bn, standin, add)
	}
	f.etcdCheck(ctx, bn, len(cps), standin, add)

	// Kubernetes side, with the admin certificate of the kubeconfig.
	kc, err := ParseKubeconfig(kubeconfig)
	if err != nil {
		add("kubernetes api", Failed, "%v", err)
		return rep
	}
	hc, err := kc.HTTPClient(f.Dialer, orDefault(f.CallTimeout, DefaultCallTimeout))
	if err != nil {
		add("kubernetes api", Failed, "%v", err)
		return rep
	}
	api := &kubeapi.Client{HTTP: hc, Server: kc.Server}
	code, body, err := api.Get(ctx, "/readyz")
	switch {
	case err != nil:
		add("kubernetes /readyz", Failed, "%s: %v", kc.Server, err)
		return rep
	case code != http.StatusOK:
		add("kubernetes /readyz", Failed, "%s answered %d: %s", kc.Server, code, kubeapi.FirstLine(body))
		return rep
	default:
		add("kubernetes /readyz", OK, "%s ready", kc.Server)
	}
	f.nodesCheck(ctx, api, standin, add)
	f.staticPodsCheck(ctx, api, cps, standin, add)
	return rep
}

type addFunc func(name string, st Status, format string, args ...any)

// required services on every node and on control planes.
var (
	nodeServices = []string{"apid", "containerd", "cri", "kubelet"}
	cpServices   = []string{"etcd"}
)

func (f *Flow) talosChecks(ctx context.Context, n *Node, bootstrapNode, standin bool, add addFunc) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	name := "talos " + n.Name
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		add(name, Failed, "%s: %v", n.Addr, err)
		return
	}
	defer c.Close()
	v, err := c.Version(cctx)
	if err != nil {
		add(name, Failed, "%s: %v", n.Addr, shortErr(err))
		return
	}
	tag := ""
	if len(v.GetMessages()) > 0 {
		tag = v.GetMessages()[0].GetVersion().GetTag()
	}
	sl, err := c.ServiceList(cctx)
	if err != nil {
		add(name, Failed, "%s %s: listing services: %v", n.Addr, tag, shortErr(err))
		return
	}
	want := slices.Clone(nodeServices)
	note := ""
	if n.ControlPlane {
		if standin && !bootstrapNode {
			note = " (etcd not checked: a stand-in runs it only on the bootstrap node)"
		} else {
			want = append(want, cpServices...)
		}
	}
	var bad []string
	for _, id := range want {
		if s := service(sl, id); s == nil {
			bad = append(bad, id+" missing")
		} else if s.GetState() != "Running" || (!s.GetHealth().GetUnknown() && !s.GetHealth().GetHealthy()) {
			bad = append(bad, fmt.Sprintf("%s %s (%s)", id, s.GetState(), s.GetHealth().GetLastMessage()))
		}
	}
	if len(bad) > 0 {
		add(name, Failed, "%s %s: %s", n.Addr, tag, strings.Join(bad, ", "))
		return
	}
	add(name, OK, "%s %s: %s running%s", n.Addr, tag, strings.Join(want, ", "), note)
}

func service(sl *machine.ServiceListResponse, id string) *machine.ServiceInfo {
	for _, m := range sl.GetMessages() {
		for _, s := range m.GetServices() {
			if s.GetId() == id {
				return s
			}
		}
	}
	return nil
}

func (f *Flow) etcdCheck(ctx context.Context, n *Node, want int, standin bool, add addFunc) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		add("etcd members", Failed, "%v", err)
		return
	}
	defer c.Close()
	resp, err := c.EtcdMemberList(cctx, &machine.EtcdMemberListRequest{})
	if err != nil {
		add("etcd members", Failed, "asking %s: %v", n.Name, shortErr(err))
		return
	}
	var names []string
	for _, m := range resp.GetMessages() {
		for _, mem := range m.GetMembers() {
			names = append(names, mem.GetHostname())
		}
	}
	slices.Sort(names)
	switch {
	case standin && len(names) > 0 && len(names) != want:
		add("etcd members", Skipped, "%d simulated member(s) %v; a stand-in simulates one, so %d control planes cannot be checked", len(names), names, want)
	case len(names) != want:
		add("etcd members", Failed, "%d member(s) %v, want %d (one per control plane)", len(names), names, want)
	default:
		add("etcd members", OK, "%d member(s) %v", len(names), names)
	}
}

func (f *Flow) nodesCheck(ctx context.Context, api *kubeapi.Client, standin bool, add addFunc) {
	var list corev1.NodeList
	code, err := api.Do(ctx, http.MethodGet, "/api/v1/nodes", "", nil, &list)
	switch {
	case standin && code == http.StatusNotFound:
		add("nodes ready", Skipped, "the stand-in kube-apiserver serves no /api/v1/nodes")
		return
	case err != nil:
		add("nodes ready", Failed, "%v", err)
		return
	}
	ready := map[string]bool{}
	for _, n := range list.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready[n.Name] = true
			}
		}
	}
	var bad []string
	for _, n := range f.Nodes {
		if !ready[n.Name] {
			bad = append(bad, n.Name)
		}
	}
	if len(bad) > 0 {
		add("nodes ready", Failed, "not Ready: %s", strings.Join(bad, ", "))
		return
	}
	add("nodes ready", OK, "%d node(s) Ready", len(f.Nodes))
}

func (f *Flow) staticPodsCheck(ctx context.Context, api *kubeapi.Client, cps []string, standin bool, add addFunc) {
	var list corev1.PodList
	code, err := api.Do(ctx, http.MethodGet, "/api/v1/namespaces/kube-system/pods", "", nil, &list)
	switch {
	case standin && code == http.StatusNotFound:
		add("control-plane pods", Skipped, "the stand-in kube-apiserver runs no pods")
		return
	case err != nil:
		add("control-plane pods", Failed, "%v", err)
		return
	}
	running := map[string]bool{}
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				running[p.Name] = true
			}
		}
	}
	var bad []string
	for _, cp := range cps {
		for _, comp := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
			if name := comp + "-" + cp; !running[name] {
				bad = append(bad, name)
			}
		}
	}
	if len(bad) > 0 {
		add("control-plane pods", Failed, "not running and ready: %s", strings.Join(bad, ", "))
		return
	}
	add("control-plane pods", OK, "apiserver, controller-manager and scheduler ready on %d control plane(s)", len(cps))
}

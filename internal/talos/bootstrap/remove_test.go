package bootstrap

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Removing a worker through the stand-in control plane's Kubernetes API:
// cordoned, its pods evicted (DaemonSet pods left), its Node deleted; a
// node Kubernetes never knew is skipped; other nodes untouched.
func TestRemoveNodes(t *testing.T) {
	l, _ := bootstrapped(t, labOpts{})
	cp := l.nodes[0]
	if got := cp.KubeNodes(); len(got) != 3 {
		t.Fatalf("the stand-in control plane knows nodes %v, want the three that joined", got)
	}
	cp.AddPod("apps", "web-1", "lab-worker-2", "ReplicaSet")
	cp.AddPod("apps", "db-0", "lab-worker-2", "StatefulSet")
	cp.AddPod("kube-system", "proxy-x", "lab-worker-2", "DaemonSet")
	cp.AddPod("apps", "web-2", "lab-worker-1", "ReplicaSet")
	var lines []string
	l.flow.Progress = func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	if err := l.flow.RemoveNodes(context.Background(), []string{"lab-worker-2", "lab-worker-9"}); err != nil {
		t.Fatalf("RemoveNodes: %v", err)
	}
	got := strings.Join(lines, "\n")
	want := "lab-worker-2: cordoned\nlab-worker-2: drained (2 pod(s) evicted)\nlab-worker-2: node deleted from kubernetes\nlab-worker-9: not a kubernetes node (never joined or removed already)"
	if got != want {
		t.Errorf("progress:\n%s\nwant:\n%s", got, want)
	}
	nodes := cp.KubeNodes()
	if _, ok := nodes["lab-worker-2"]; ok || len(nodes) != 2 || nodes["lab-worker-1"] {
		t.Errorf("nodes after removal = %v, want lab-cp-1 and lab-worker-1, neither cordoned", nodes)
	}
	if p := cp.PodsOn("lab-worker-1"); strings.Join(p, ",") != "apps/web-2" {
		t.Errorf("pods on lab-worker-1 = %v, want apps/web-2 untouched", p)
	}
	// Again: nothing left to do.
	if err := l.flow.RemoveNodes(context.Background(), []string{"lab-worker-2"}); err != nil {
		t.Errorf("second RemoveNodes: %v", err)
	}
}

// A pod whose disruption budget never allows the eviction stops the
// removal within DrainTimeout, naming the pod; the node stays cordoned
// and is not deleted.
func TestRemoveNodesDrainBounded(t *testing.T) {
	l, _ := bootstrapped(t, labOpts{})
	cp := l.nodes[0]
	cp.AddPod("apps", "db-0", "lab-worker-1", "StatefulSet")
	cp.ProtectPod("apps", "db-0")
	l.flow.DrainTimeout = 500 * time.Millisecond
	start := time.Now()
	err := l.flow.RemoveNodes(context.Background(), []string{"lab-worker-1"})
	if err == nil {
		t.Fatal("RemoveNodes with a pod that may not be evicted succeeded")
	}
	for _, want := range []string{"removing node lab-worker-1 from kubernetes", "pods still on the node after 500ms: apps/db-0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if cordoned, ok := cp.KubeNodes()["lab-worker-1"]; !ok || !cordoned {
		t.Errorf("lab-worker-1 after a failed drain: present %v, cordoned %v; want present and cordoned", ok, cordoned)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("RemoveNodes took %s with a 500ms drain bound", time.Since(start))
	}
}

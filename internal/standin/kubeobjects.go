package standin

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The stand-in kube-apiserver keeps a few Node and Pod objects so that
// removing a worker runs the real client path: cordon (PATCH
// spec.unschedulable), evict its pods (the Eviction API), delete the
// Node. It knows the nodes that joined the cluster: the control plane
// itself once bootstrapped and every worker whose Talos API certificate
// its trustd signed (where a real kubelet would register), kept in
// StateDir as etcd would keep them. It runs no pods: tests place some
// with AddPod.

// kubeNode is one Node object.
type kubeNode struct {
	name, kubeletVersion string
	unschedulable        bool
	created              time.Time
}

// kubePod is one Pod object.
type kubePod struct {
	namespace, name, nodeName string
	// ownerKind is the kind of its controller (DaemonSet pods stay on
	// their node), mirror marks a static pod's mirror.
	ownerKind string
	mirror    bool
	// protected pods refuse eviction as a PodDisruptionBudget would.
	protected bool
}

// dnsLabel is what node, namespace and pod names look like.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// registerKubeNode adds a Node object (mu held).
func (n *Node) registerKubeNode(name, kubeletVersion string) {
	if n.kubeNodes == nil {
		n.kubeNodes = map[string]*kubeNode{}
	}
	if _, ok := n.kubeNodes[name]; ok {
		n.kubeNodes[name].kubeletVersion = kubeletVersion
		return
	}
	n.kubeNodes[name] = &kubeNode{name: name, kubeletVersion: kubeletVersion, created: time.Now()}
	n.saveKubeNodes()
}

// saveKubeNodes keeps the Node objects in StateDir (mu held); a failure
// is logged, the objects stay in memory.
func (n *Node) saveKubeNodes() {
	n.state.KubeNodes = map[string]bool{}
	for name, kn := range n.kubeNodes {
		n.state.KubeNodes[name] = kn.unschedulable
	}
	if n.StateDir == "" {
		return
	}
	// In the background of a request, never recreate a state folder
	// removed with the node (homelab destroy removes it while the node
	// may still serve).
	if _, err := os.Stat(n.StateDir); err != nil {
		return
	}
	if err := n.saveState(); err != nil {
		n.log().Error(Marker+" keeping the node objects", "err", err)
	}
}

// AddKubeNode registers a Node object on a control plane's Kubernetes
// API, as a kubelet registering does (tests).
func (n *Node) AddKubeNode(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.registerKubeNode(name, n.kubeVersion())
}

// AddPod places a Pod object on a node of a control plane's Kubernetes
// API; ownerKind is its controller's kind ("ReplicaSet", "DaemonSet" or
// ""). The stand-in runs nothing: the object only lets a drain be tested.
func (n *Node) AddPod(namespace, name, nodeName, ownerKind string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.kubePods = append(n.kubePods, &kubePod{namespace: namespace, name: name, nodeName: nodeName, ownerKind: ownerKind})
}

// ProtectPod makes a pod placed with AddPod refuse eviction (429), as
// one covered by a PodDisruptionBudget with no disruption allowed.
func (n *Node) ProtectPod(namespace, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.kubePods {
		if p.namespace == namespace && p.name == name {
			p.protected = true
		}
	}
}

// KubeNodes lists the Node objects (name and whether cordoned).
func (n *Node) KubeNodes() map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]bool{}
	for name, kn := range n.kubeNodes {
		out[name] = kn.unschedulable
	}
	return out
}

// PodsOn lists the namespace/name of the pods bound to a node.
func (n *Node) PodsOn(node string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, p := range n.kubePods {
		if p.nodeName == node {
			out = append(out, p.namespace+"/"+p.name)
		}
	}
	return out
}

func (n *Node) registerKubeObjects(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/nodes/{name}", n.getNode)
	mux.HandleFunc("PATCH /api/v1/nodes/{name}", n.patchNode)
	mux.HandleFunc("DELETE /api/v1/nodes/{name}", n.deleteNode)
	mux.HandleFunc("GET /api/v1/pods", n.listPods)
	mux.HandleFunc("POST /api/v1/namespaces/{ns}/pods/{name}/eviction", n.evictPod)
}

type objectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	CreationTimestamp string            `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	OwnerReferences   []ownerRef        `json:"ownerReferences,omitempty"`
}

type ownerRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	Controller bool   `json:"controller"`
}

func (kn *kubeNode) object() map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": objectMeta{
			Name: kn.name, CreationTimestamp: kn.created.UTC().Format(time.RFC3339),
			Labels:      map[string]string{"kubernetes.io/hostname": kn.name},
			Annotations: map[string]string{"homelab.dev/standin": Marker + ": no kubelet runs here"},
		},
		"spec": map[string]any{"unschedulable": kn.unschedulable},
		"status": map[string]any{
			"conditions": []map[string]any{{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": Marker}},
			"nodeInfo":   map[string]any{"kubeletVersion": kn.kubeletVersion},
		},
	}
}

func (p *kubePod) object() map[string]any {
	meta := objectMeta{Name: p.name, Namespace: p.namespace}
	if p.ownerKind != "" {
		api := "apps/v1"
		meta.OwnerReferences = []ownerRef{{APIVersion: api, Kind: p.ownerKind, Name: p.name + "-owner", UID: "standin-" + p.name, Controller: true}}
	}
	if p.mirror {
		meta.Annotations = map[string]string{"kubernetes.io/config.mirror": "standin"}
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": meta,
		"spec":   map[string]any{"nodeName": p.nodeName, "containers": []map[string]any{{"name": "main", "image": "registry.invalid/standin:0"}}},
		"status": map[string]any{"phase": "Running"},
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// nameOK refuses names that are not DNS labels (400, as the API does).
func nameOK(w http.ResponseWriter, names ...string) bool {
	for _, s := range names {
		if !dnsLabel.MatchString(s) {
			kubeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("%q is not a valid name", s))
			return false
		}
	}
	return true
}

func (n *Node) getNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !nameOK(w, name) {
		return
	}
	n.mu.Lock()
	kn, ok := n.kubeNodes[name]
	var obj map[string]any
	if ok {
		obj = kn.object()
	}
	n.mu.Unlock()
	if !ok {
		kubeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("nodes %q not found", name))
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// patchNode accepts a merge patch of spec.unschedulable only.
func (n *Node) patchNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !nameOK(w, name) {
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/merge-patch+json" && ct != "application/strategic-merge-patch+json" {
		kubeStatus(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", "the "+Marker+" accepts merge patches (application/merge-patch+json) only")
		return
	}
	var patch struct {
		Spec *struct {
			Unschedulable *bool `json:"unschedulable"`
		} `json:"spec"`
	}
	if !decodeStrict(w, r, &patch) {
		return
	}
	if patch.Spec == nil || patch.Spec.Unschedulable == nil {
		kubeStatus(w, http.StatusUnprocessableEntity, "Invalid", "the "+Marker+" patches spec.unschedulable only")
		return
	}
	n.mu.Lock()
	kn, ok := n.kubeNodes[name]
	var obj map[string]any
	if ok {
		kn.unschedulable = *patch.Spec.Unschedulable
		obj = kn.object()
		n.saveKubeNodes()
	}
	n.mu.Unlock()
	if !ok {
		kubeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("nodes %q not found", name))
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// deleteNode removes the Node and, as the pod garbage collector does,
// the pods still bound to it.
func (n *Node) deleteNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !nameOK(w, name) {
		return
	}
	if r.ContentLength > 0 {
		// DeleteOptions are not supported: refuse rather than ignore.
		kubeStatus(w, http.StatusBadRequest, "BadRequest", "the "+Marker+" takes no DeleteOptions")
		return
	}
	n.mu.Lock()
	_, ok := n.kubeNodes[name]
	if ok {
		delete(n.kubeNodes, name)
		n.kubePods = slices.DeleteFunc(n.kubePods, func(p *kubePod) bool { return p.nodeName == name })
		n.saveKubeNodes()
	}
	n.mu.Unlock()
	if !ok {
		kubeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("nodes %q not found", name))
		return
	}
	n.log().Info(Marker+" node object deleted", "node", name)
	writeJSON(w, http.StatusOK, map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{}, "status": "Success",
		"details": map[string]any{"name": name, "kind": "nodes"}})
}

// listPods lists pods across namespaces with fieldSelector
// spec.nodeName=<node>, the only selector it knows.
func (n *Node) listPods(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "fieldSelector" {
			kubeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("the %s does not support the %q parameter", Marker, k))
			return
		}
	}
	node, ok := strings.CutPrefix(q.Get("fieldSelector"), "spec.nodeName=")
	if !ok || len(q["fieldSelector"]) != 1 || !dnsLabel.MatchString(node) {
		kubeStatus(w, http.StatusBadRequest, "BadRequest", "the "+Marker+" lists pods only with fieldSelector=spec.nodeName=<node>")
		return
	}
	n.mu.Lock()
	items := []map[string]any{}
	for _, p := range n.kubePods {
		if p.nodeName == node {
			items = append(items, p.object())
		}
	}
	n.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"apiVersion": "v1", "kind": "PodList", "metadata": map[string]any{}, "items": items})
}

// evictPod takes a policy/v1 Eviction for the pod and deletes it.
func (n *Node) evictPod(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !nameOK(w, ns, name) {
		return
	}
	var ev struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if !decodeStrict(w, r, &ev) {
		return
	}
	if ev.APIVersion != "policy/v1" || ev.Kind != "Eviction" || ev.Metadata.Name != name || (ev.Metadata.Namespace != "" && ev.Metadata.Namespace != ns) {
		kubeStatus(w, http.StatusBadRequest, "BadRequest", "want a policy/v1 Eviction naming the pod of the URL")
		return
	}
	n.mu.Lock()
	i := slices.IndexFunc(n.kubePods, func(p *kubePod) bool { return p.namespace == ns && p.name == name })
	protected := i >= 0 && n.kubePods[i].protected
	if i >= 0 && !protected {
		n.kubePods = slices.Delete(n.kubePods, i, i+1)
	}
	n.mu.Unlock()
	switch {
	case i < 0:
		kubeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", name))
		return
	case protected:
		kubeStatus(w, http.StatusTooManyRequests, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
		return
	}
	n.log().Info(Marker+" pod evicted", "pod", ns+"/"+name)
	writeJSON(w, http.StatusCreated, map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{}, "status": "Success", "code": 201})
}

// decodeStrict reads a JSON body of at most 64 KiB into v, refusing
// unknown fields and trailing data.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		kubeStatus(w, http.StatusBadRequest, "BadRequest", "the body is not the expected JSON (unknown fields are refused): "+firstLineOf(err.Error()))
		return false
	}
	if dec.More() {
		kubeStatus(w, http.StatusBadRequest, "BadRequest", "trailing data after the JSON body")
		return false
	}
	return true
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

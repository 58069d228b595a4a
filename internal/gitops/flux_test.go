package gitops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// testComponents is a small stand-in for Flux's install.yaml, made by the
// test: the real one is downloaded at bootstrap, never vendored. Its
// order puts a ServiceAccount before the CRDs and the Namespace.
const testComponents = `# flux install manifests (test copy)
apiVersion: v1
kind: ServiceAccount
metadata:
  name: source-controller
  namespace: flux-system
---
apiVersion: v1
kind: Namespace
metadata:
  name: flux-system
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gitrepositories.source.toolkit.fluxcd.io
spec:
  group: source.toolkit.fluxcd.io
  names: {kind: GitRepository, plural: gitrepositories}
  scope: Namespaced
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: kustomizations.kustomize.toolkit.fluxcd.io
spec:
  group: kustomize.toolkit.fluxcd.io
  names: {kind: Kustomization, plural: kustomizations}
  scope: Namespaced
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: source-controller
  namespace: flux-system
spec: {}
`

// fakeKube is a recorded fake of the Kubernetes API: discovery for the
// kinds the bootstrap uses, Flux's groups only once their CRDs were
// applied (and establishDelay later), and server-side apply recorded.
type fakeKube struct {
	mu             sync.Mutex
	patches        []string
	bodies         map[string][]byte
	crdApplied     map[string]time.Time
	establishDelay time.Duration
	neverEstablish bool
	t              *testing.T
}

func (f *fakeKube) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := func(name, kind string, namespaced bool) metav1.APIResource {
		return metav1.APIResource{Name: name, Kind: kind, Namespaced: namespaced}
	}
	served := func(crd string) bool {
		at, ok := f.crdApplied[crd]
		return ok && !f.neverEstablish && time.Since(at) >= f.establishDelay
	}
	var list *metav1.APIResourceList
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1":
		list = &metav1.APIResourceList{GroupVersion: "v1", APIResources: []metav1.APIResource{
			res("namespaces", "Namespace", false), res("secrets", "Secret", true),
			res("serviceaccounts", "ServiceAccount", true), res("namespaces/status", "Namespace", false),
		}}
	case r.Method == http.MethodGet && r.URL.Path == "/apis/apps/v1":
		list = &metav1.APIResourceList{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{res("deployments", "Deployment", true)}}
	case r.Method == http.MethodGet && r.URL.Path == "/apis/apiextensions.k8s.io/v1":
		list = &metav1.APIResourceList{GroupVersion: "apiextensions.k8s.io/v1", APIResources: []metav1.APIResource{res("customresourcedefinitions", "CustomResourceDefinition", false)}}
	case r.Method == http.MethodGet && r.URL.Path == "/apis/source.toolkit.fluxcd.io/v1" && served("gitrepositories.source.toolkit.fluxcd.io"):
		list = &metav1.APIResourceList{GroupVersion: "source.toolkit.fluxcd.io/v1", APIResources: []metav1.APIResource{res("gitrepositories", "GitRepository", true)}}
	case r.Method == http.MethodGet && r.URL.Path == "/apis/kustomize.toolkit.fluxcd.io/v1" && served("kustomizations.kustomize.toolkit.fluxcd.io"):
		list = &metav1.APIResourceList{GroupVersion: "kustomize.toolkit.fluxcd.io/v1", APIResources: []metav1.APIResource{res("kustomizations", "Kustomization", true)}}
	case r.Method == http.MethodPatch:
		q := r.URL.Query()
		if ct := r.Header.Get("Content-Type"); ct != "application/apply-patch+yaml" || q.Get("fieldManager") != FieldManager || q.Get("force") != "true" {
			f.t.Errorf("PATCH %s with Content-Type %q, query %q: not a forced server-side apply by %s", r.URL.Path, ct, r.URL.RawQuery, FieldManager)
		}
		body, _ := io.ReadAll(r.Body)
		f.patches = append(f.patches, r.URL.Path)
		f.bodies[r.URL.Path] = body
		if strings.HasPrefix(r.URL.Path, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/") {
			f.crdApplied[strings.TrimPrefix(r.URL.Path, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/")] = time.Now()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if list == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(metav1.Status{Status: "Failure", Message: "the server could not find the requested resource", Reason: metav1.StatusReasonNotFound, Code: 404})
		return
	}
	json.NewEncoder(w).Encode(list)
}

func newFlux(t *testing.T) (*Bootstrapper, *fakeKube, string) {
	t.Helper()
	kube := &fakeKube{bodies: map[string][]byte{}, crdApplied: map[string]time.Time{}, establishDelay: 50 * time.Millisecond, t: t}
	ks := httptest.NewServer(kube)
	t.Cleanup(ks.Close)
	cs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/fluxcd/flux2/releases/download/"+FluxVersion+"/install.yaml" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, testComponents)
	}))
	t.Cleanup(cs.Close)

	lab := referenceLab(t)
	st := memStore{}
	arts, err := Build(lab, st)
	if err != nil {
		t.Fatal(err)
	}
	sync, err := SyncFile(arts)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bootstrapper{
		Kube: ks.Client(), Server: ks.URL,
		Fetch:         cs.Client(),
		ComponentsURL: cs.URL + strings.TrimPrefix(ComponentsURL(FluxVersion), "https://github.com"),
		Sync:          sync, SOPSIdentity: st[StateFileSOPSAgeKey],
		GitSecret:    map[string][]byte{"identity": []byte("-----BEGIN OPENSSH PRIVATE KEY-----\ntest\n"), "known_hosts": []byte("10.10.1.5 ssh-ed25519 AAAA\n")},
		Timeout:      2 * time.Second,
		PollInterval: 20 * time.Millisecond,
	}
	return b, kube, string(st[StateFileSOPSAgeKey])
}

func TestFluxBootstrap(t *testing.T) {
	b, kube, identity := newFlux(t)
	want := []string{
		// CRDs and the namespace before the rest of the install manifests.
		"/api/v1/namespaces/flux-system",
		"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gitrepositories.source.toolkit.fluxcd.io",
		"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/kustomizations.kustomize.toolkit.fluxcd.io",
		"/api/v1/namespaces/flux-system/serviceaccounts/source-controller",
		"/apis/apps/v1/namespaces/flux-system/deployments/source-controller",
		// Secrets: the SOPS key and the Git credentials only; the apps'
		// secrets come SOPS-encrypted from the repository.
		"/api/v1/namespaces/flux-system/secrets/sops-age",
		"/api/v1/namespaces/flux-system/secrets/flux-system",
		// The sync, once Flux's CRDs are established.
		"/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system",
		"/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/flux-system",
	}
	for run := 1; run <= 2; run++ {
		kube.mu.Lock()
		kube.patches = nil
		kube.mu.Unlock()
		if err := b.Run(context.Background()); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		kube.mu.Lock()
		got := kube.patches
		kube.mu.Unlock()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("run %d applied:\n  %s\nwant:\n  %s", run, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}

	if string(b.Components) != testComponents {
		t.Error("Run did not leave the install manifests it applied in Components")
	}
	var sops struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(kube.bodies["/api/v1/namespaces/flux-system/secrets/sops-age"], &sops); err != nil {
		t.Fatal(err)
	}
	if key, _ := base64.StdEncoding.DecodeString(sops.Data["age.agekey"]); string(key) != identity {
		t.Error("flux-system/sops-age does not hold the lab's age identity")
	}
	var repo map[string]any
	yaml.Unmarshal(kube.bodies["/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system"], &repo)
	if u := repo["spec"].(map[string]any)["url"]; u != "ssh://git@10.10.1.5/srv/git/lab.git" {
		t.Errorf("GitRepository url = %v, want the manager's repository", u)
	}
}

func TestFluxBootstrapErrors(t *testing.T) {
	t.Run("download fails", func(t *testing.T) {
		b, _, _ := newFlux(t)
		b.ComponentsURL += ".missing"
		err := b.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "downloading the flux "+FluxVersion+" install manifests") || !strings.Contains(err.Error(), "404") {
			t.Errorf("Run() = %v, want a download error with the status", err)
		}
	})
	t.Run("CRDs never established", func(t *testing.T) {
		b, kube, identity := newFlux(t)
		kube.neverEstablish = true
		b.Timeout = 300 * time.Millisecond
		start := time.Now()
		err := b.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "flux's CRDs are not established") {
			t.Errorf("Run() = %v, want a bounded wait for the CRDs", err)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("Run took %s with a 300ms bound", time.Since(start))
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimSpace(identity)) {
			t.Error("the error quotes the age identity")
		}
	})
}

package gitops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/kubeapi"
	"github.com/homelab-dev/homelab/internal/render"
)

// ComponentsURL is where the Flux project publishes the install manifests
// (gotk-components) of a release.
func ComponentsURL(version string) string {
	return "https://github.com/fluxcd/flux2/releases/download/" + version + "/install.yaml"
}

// FieldManager is homelab's name in server-side apply.
const FieldManager = "homelab"

// maxComponents bounds the downloaded install manifests (about 1 MiB).
const maxComponents = 32 << 20

// Bootstrapper installs Flux into a cluster and points it at the lab's
// repository: it downloads Flux's install manifests for FluxVersion,
// applies them (server-side apply), waits for Flux's API types, creates
// the secrets Flux needs (the SOPS age key, the Git credentials), and
// applies the repository's gotk-sync.yaml, after which Flux reconciles
// everything else from Git, the apps' SOPS-encrypted secrets included.
type Bootstrapper struct {
	// Kube talks to the Kubernetes API at Server with the admin's
	// credentials (see bootstrap.Kubeconfig.HTTPClient).
	Kube   *http.Client
	Server string
	// Fetch downloads the install manifests; nil uses a client with a
	// one-minute timeout. ComponentsURL overrides where from.
	Fetch         *http.Client
	ComponentsURL string
	// Components are Flux's install manifests; nil downloads them, and
	// Run leaves what it applied here. They belong in the repository as
	// clusters/<lab>/flux-system/gotk-components.yaml (ComponentsPath),
	// which the tree's kustomization.yaml lists: commit them with the
	// tree, as flux bootstrap does, or Flux cannot build its own sync.
	Components []byte
	// Sync is the tree's clusters/<lab>/flux-system/gotk-sync.yaml.
	Sync []byte
	// SOPSIdentity is the age identity of the lab (flux-system/sops-age).
	SOPSIdentity []byte
	// GitSecret holds the data of the flux-system secret Flux uses to
	// pull the repository (for SSH: identity, identity.pub, known_hosts);
	// nil creates none (a public repository).
	GitSecret map[string][]byte
	// Timeout bounds the wait for Flux's API types; zero means 2 minutes.
	Timeout time.Duration
	// PollInterval between discovery attempts; zero means 1 second.
	PollInterval time.Duration
	// Progress receives one line per step; nil is quiet.
	Progress func(format string, args ...any)

	mu        sync.Mutex
	discovery map[string]*metav1.APIResourceList
}

// ComponentsPath is where Flux's install manifests go in the repository.
func ComponentsPath(labName string) string {
	return "clusters/" + labName + "/flux-system/gotk-components.yaml"
}

// SyncFile picks gotk-sync.yaml out of a rendered tree.
func SyncFile(arts []render.Artifact) ([]byte, error) {
	for _, a := range arts {
		if strings.HasSuffix(a.Path, "/flux-system/gotk-sync.yaml") {
			return a.Data, nil
		}
	}
	return nil, errors.New("the gitops tree has no flux-system/gotk-sync.yaml")
}

func (b *Bootstrapper) api() *kubeapi.Client {
	return &kubeapi.Client{HTTP: b.Kube, Server: b.Server}
}

func (b *Bootstrapper) progress(format string, args ...any) {
	if b.Progress != nil {
		b.Progress(format, args...)
	}
}

// Run installs Flux and its sync. It is idempotent: applying again
// changes nothing that is already as wanted.
func (b *Bootstrapper) Run(ctx context.Context) error {
	if b.Kube == nil || b.Server == "" {
		return errors.New("bootstrapping flux: no Kubernetes API client")
	}
	if len(b.Sync) == 0 {
		return errors.New("bootstrapping flux: no gotk-sync.yaml")
	}
	if b.Components == nil {
		components, sum, err := b.fetch(ctx)
		if err != nil {
			return fmt.Errorf("bootstrapping flux: %w", err)
		}
		b.Components = components
		b.progress("flux %s install manifests downloaded (sha256 %s)", FluxVersion, sum[:16])
	}
	docs, err := manifests(b.Components)
	if err != nil {
		return fmt.Errorf("bootstrapping flux: the install manifests: %w", err)
	}
	// CRDs and namespaces first, as kubectl apply of the file would
	// need them to exist before the objects that use them.
	var first, rest []map[string]any
	for _, d := range docs {
		switch d["kind"] {
		case "CustomResourceDefinition", "Namespace":
			first = append(first, d)
		default:
			rest = append(rest, d)
		}
	}
	for _, d := range append(first, rest...) {
		if err := b.apply(ctx, d); err != nil {
			return fmt.Errorf("bootstrapping flux: applying the install manifests: %w", err)
		}
	}
	b.progress("flux components applied (%d objects)", len(docs))

	secrets := b.secrets()
	for _, d := range secrets {
		if err := b.apply(ctx, d); err != nil {
			return fmt.Errorf("bootstrapping flux: creating secrets: %w", err)
		}
	}
	b.progress("flux secrets created (%d objects)", len(secrets))

	sync, err := manifests(b.Sync)
	if err != nil {
		return fmt.Errorf("bootstrapping flux: gotk-sync.yaml: %w", err)
	}
	for _, d := range sync {
		// The toolkit's types exist once their CRDs are established.
		if err := b.waitKind(ctx, d); err != nil {
			return fmt.Errorf("bootstrapping flux: %w", err)
		}
		if err := b.apply(ctx, d); err != nil {
			return fmt.Errorf("bootstrapping flux: applying gotk-sync.yaml: %w", err)
		}
	}
	b.progress("flux syncs from the lab's repository")
	return nil
}

func (b *Bootstrapper) fetch(ctx context.Context) ([]byte, string, error) {
	u := b.ComponentsURL
	if u == "" {
		u = ComponentsURL(FluxVersion)
	}
	c := b.Fetch
	if c == nil {
		c = &http.Client{Timeout: time.Minute}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("downloading the flux %s install manifests: %w", FluxVersion, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("downloading the flux %s install manifests from %s: %s", FluxVersion, u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxComponents+1))
	if err != nil {
		return nil, "", fmt.Errorf("downloading the flux %s install manifests: %w", FluxVersion, err)
	}
	if len(data) > maxComponents {
		return nil, "", fmt.Errorf("downloading the flux %s install manifests: larger than %d MiB", FluxVersion, maxComponents>>20)
	}
	s := sha256.Sum256(data)
	return data, hex.EncodeToString(s[:]), nil
}

// manifests splits a multi-document YAML into objects, skipping empty
// documents and reading kind: List items.
func manifests(data []byte) ([]map[string]any, error) {
	var out []map[string]any
	for i, doc := range splitDocs(data) {
		var o map[string]any
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if o == nil {
			continue
		}
		if o["kind"] == "List" {
			items, _ := o["items"].([]any)
			for _, it := range items {
				if m, ok := it.(map[string]any); ok {
					out = append(out, m)
				}
			}
			continue
		}
		if _, ok := o["apiVersion"].(string); !ok {
			return nil, fmt.Errorf("document %d has no apiVersion", i+1)
		}
		out = append(out, o)
	}
	return out, nil
}

func (b *Bootstrapper) secrets() []map[string]any {
	var out []map[string]any
	secret := func(name string, data map[string][]byte) map[string]any {
		d := map[string]any{}
		for k, v := range data {
			d[k] = v // []byte marshals as base64, as Secret.data wants
		}
		return map[string]any{
			"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
			"metadata": map[string]any{"name": name, "namespace": FluxNamespace},
			"data":     d,
		}
	}
	if len(b.SOPSIdentity) > 0 {
		out = append(out, secret(SOPSAgeSecret, map[string][]byte{"age.agekey": b.SOPSIdentity}))
	}
	if b.GitSecret != nil {
		out = append(out, secret(GitCredentialsSecret, b.GitSecret))
	}
	return out
}

// resource finds the plural name and scope of an object's kind through
// the API's discovery documents.
func (b *Bootstrapper) resource(ctx context.Context, apiVersion, kind string, refresh bool) (metav1.APIResource, bool, error) {
	b.mu.Lock()
	list, ok := b.discovery[apiVersion]
	b.mu.Unlock()
	if !ok || refresh {
		p := "/apis/" + apiVersion
		if apiVersion == "v1" {
			p = "/api/v1"
		}
		var l metav1.APIResourceList
		code, err := b.api().Do(ctx, http.MethodGet, p, "", nil, &l)
		switch {
		case code == http.StatusNotFound:
			return metav1.APIResource{}, false, nil
		case err != nil:
			return metav1.APIResource{}, false, fmt.Errorf("discovering %s: %w", apiVersion, err)
		}
		list = &l
		b.mu.Lock()
		if b.discovery == nil {
			b.discovery = map[string]*metav1.APIResourceList{}
		}
		b.discovery[apiVersion] = list
		b.mu.Unlock()
	}
	for _, r := range list.APIResources {
		if r.Kind == kind && !strings.Contains(r.Name, "/") {
			return r, true, nil
		}
	}
	return metav1.APIResource{}, false, nil
}

// waitKind waits until the API serves the object's kind.
func (b *Bootstrapper) waitKind(ctx context.Context, o map[string]any) error {
	apiVersion, _ := o["apiVersion"].(string)
	kind, _ := o["kind"].(string)
	timeout := b.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	poll := b.PollInterval
	if poll == 0 {
		poll = time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		_, ok, err := b.resource(ctx, apiVersion, kind, true)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API serves no %s %s after %s: flux's CRDs are not established", apiVersion, kind, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// apply server-side applies one object.
func (b *Bootstrapper) apply(ctx context.Context, o map[string]any) error {
	apiVersion, _ := o["apiVersion"].(string)
	kind, _ := o["kind"].(string)
	meta, _ := o["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if kind == "" || name == "" {
		return fmt.Errorf("an object of %s has no kind or name", apiVersion)
	}
	r, ok, err := b.resource(ctx, apiVersion, kind, false)
	if err == nil && !ok {
		if err = b.waitKind(ctx, o); err == nil {
			r, ok, err = b.resource(ctx, apiVersion, kind, false)
		}
	}
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("the API serves no %s %s", apiVersion, kind)
	}
	p := "/apis/" + apiVersion
	if apiVersion == "v1" {
		p = "/api/v1"
	}
	if r.Namespaced {
		if ns == "" {
			ns = "default"
		}
		p += "/namespaces/" + url.PathEscape(ns)
	}
	p += "/" + r.Name + "/" + url.PathEscape(name) + "?fieldManager=" + FieldManager + "&force=true"
	body, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encoding %s %s: %w", kind, name, err)
	}
	if _, err := b.api().Do(ctx, http.MethodPatch, p, "application/apply-patch+yaml", body, nil); err != nil {
		// Secrets' errors must not carry their bodies; Do never does.
		return fmt.Errorf("applying %s %s: %w", kind, name, err)
	}
	return nil
}

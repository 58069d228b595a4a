package gitops

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/sops"
)

// KustomizeConfig is kustomize's kustomization.yaml, limited to what the
// tree uses (kustomize's own types are not imported for one list).
type KustomizeConfig struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// Object is one decoded manifest.
type Object struct {
	APIVersion, Kind, Namespace, Name string
	// Value is a pointer to the API type (for example *helmv2.HelmRelease).
	Value any
	// SOPS is the metadata of a SOPS-encrypted manifest (nil in the
	// clear); its encrypted values are in Value as ENC[...] strings.
	SOPS *sops.Metadata
}

// newObject returns an empty value of the API type for apiVersion and
// kind, and whether the kind lives in a namespace.
func newObject(apiVersion, kind string) (v any, namespaced bool, ok bool) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, false, true
	case "v1 Secret":
		return &corev1.Secret{}, true, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true, true
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true, true
	case sourcev1.GroupVersion.String() + " " + sourcev1.GitRepositoryKind:
		return &sourcev1.GitRepository{}, true, true
	case sourcev1.GroupVersion.String() + " " + sourcev1.HelmRepositoryKind:
		return &sourcev1.HelmRepository{}, true, true
	case helmv2.GroupVersion.String() + " " + helmv2.HelmReleaseKind:
		return &helmv2.HelmRelease{}, true, true
	case kustomizev1.GroupVersion.String() + " " + kustomizev1.KustomizationKind:
		return &kustomizev1.Kustomization{}, true, true
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		return &KustomizeConfig{}, false, true
	}
	return nil, false, false
}

// Decode splits a multi-document YAML file and decodes every document
// strictly into its Kubernetes or Flux API type: unknown fields,
// duplicate keys, unknown kinds and missing names are errors, each
// named by file and document number. A document with a top-level sops
// key must be a SOPS-encrypted manifest with every value its rule selects
// encrypted (sops.Inspect); the rest of it is decoded strictly.
func Decode(file string, data []byte) ([]Object, error) {
	var out []Object
	var errs []error
	for i, doc := range splitDocs(data) {
		o, err := decodeOne(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", file, i+1, err))
			continue
		}
		out = append(out, o)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no manifest", file))
	}
	return out, errors.Join(errs...)
}

func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func decodeOne(doc []byte) (Object, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, fmt.Errorf("not strict YAML: %w", err)
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return Object{}, fmt.Errorf("not a manifest: %w", err)
	}
	var meta *sops.Metadata
	if j, meta, err = stripSOPS(doc, j); err != nil {
		return Object{}, err
	}
	v, namespaced, ok := newObject(tm.APIVersion, tm.Kind)
	if !ok {
		return Object{}, fmt.Errorf("unknown kind %q of %q", tm.Kind, tm.APIVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Object{}, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Object{}, errors.New("trailing data after the manifest")
	}
	o := Object{APIVersion: tm.APIVersion, Kind: tm.Kind, Value: v, SOPS: meta}
	if m, ok := v.(metav1.Object); ok {
		o.Name, o.Namespace = m.GetName(), m.GetNamespace()
		if o.Name == "" {
			return o, fmt.Errorf("%s without metadata.name", tm.Kind)
		}
		if namespaced && o.Namespace == "" {
			return o, fmt.Errorf("%s %s without metadata.namespace", tm.Kind, o.Name)
		}
		if !namespaced && o.Namespace != "" {
			return o, fmt.Errorf("%s %s is cluster-scoped but has a namespace", tm.Kind, o.Name)
		}
	}
	if k, ok := v.(*KustomizeConfig); ok && len(k.Resources) == 0 {
		return o, errors.New("kustomization.yaml lists no resources")
	}
	return o, nil
}

// stripSOPS checks the sops key of an encrypted document and returns the
// document's JSON without it; a document in the clear is returned as is.
func stripSOPS(doc, j []byte) ([]byte, *sops.Metadata, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, nil, fmt.Errorf("not a manifest: %w", err)
	}
	if _, ok := top["sops"]; !ok {
		return j, nil, nil
	}
	meta, err := sops.Inspect(doc)
	if err != nil {
		return nil, nil, err
	}
	delete(top, "sops")
	j, err = json.Marshal(top)
	if err != nil {
		return nil, nil, err
	}
	return j, meta, nil
}

// IsManifest reports whether a path of the tree holds Kubernetes
// manifests (SOPS-encrypted ones included; not .sops.yaml, the rules).
func IsManifest(p string) bool {
	return (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) && path.Base(p) != ".sops.yaml"
}

package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab-dev/homelab/internal/kubeapi"
)

// DefaultDrainTimeout bounds the eviction of one node's pods.
const DefaultDrainTimeout = 5 * time.Minute

// RemoveNodes takes workers out of the cluster through the Kubernetes API,
// with the kubeconfig stored at bootstrap, one node at a time, as kubectl
// drain and delete do: it cordons the node (spec.unschedulable), evicts
// its pods with the Eviction API (so PodDisruptionBudgets are honoured:
// an eviction refused with 429 is retried) until none is left, within
// DrainTimeout (DaemonSet pods and static pods' mirrors stay, as with
// kubectl drain --ignore-daemonsets), and deletes the Node object. A node
// Kubernetes does not know (never joined, or removed already) is skipped.
//
// Call it before the provider removes the node's machine: the pods move
// while the node still runs, and the Node object is gone before its
// kubelet stops (else it would linger NotReady).
func (f *Flow) RemoveNodes(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if f.Store == nil {
		return errors.New("removing nodes: no state folder to read the kubeconfig from")
	}
	data, err := f.Store.GetFile(FileKubeconfig)
	if err != nil {
		return fmt.Errorf("removing nodes: reading the kubeconfig: %w", err)
	}
	kc, err := ParseKubeconfig(data)
	if err != nil {
		return fmt.Errorf("removing nodes: %w", err)
	}
	hc, err := kc.HTTPClient(f.Dialer, orDefault(f.CallTimeout, DefaultCallTimeout))
	if err != nil {
		return fmt.Errorf("removing nodes: %w", err)
	}
	api := &kubeapi.Client{HTTP: hc, Server: kc.Server}
	for _, name := range names {
		if err := f.removeNode(ctx, api, name); err != nil {
			return fmt.Errorf("removing node %s from kubernetes: %w", name, err)
		}
	}
	return nil
}

func (f *Flow) removeNode(ctx context.Context, api *kubeapi.Client, name string) error {
	path := "/api/v1/nodes/" + url.PathEscape(name)
	var node corev1.Node
	code, err := api.Do(ctx, http.MethodGet, path, "", nil, &node)
	switch {
	case code == http.StatusNotFound:
		f.progress("%s: not a kubernetes node (never joined or removed already)", name)
		return nil
	case err != nil:
		return fmt.Errorf("reading the node: %w", err)
	}
	if !node.Spec.Unschedulable {
		patch := []byte(`{"spec":{"unschedulable":true}}`)
		if _, err := api.Do(ctx, http.MethodPatch, path, "application/merge-patch+json", patch, &node); err != nil {
			return fmt.Errorf("cordoning: %w", err)
		}
		if !node.Spec.Unschedulable {
			return errors.New("cordoning: the API answered the node still schedulable")
		}
	}
	f.progress("%s: cordoned", name)
	if err := f.drain(ctx, api, name); err != nil {
		return err
	}
	if code, err := api.Do(ctx, http.MethodDelete, path, "", nil, nil); err != nil && code != http.StatusNotFound {
		return fmt.Errorf("deleting the node: %w", err)
	}
	f.progress("%s: node deleted from kubernetes", name)
	return nil
}

// drain evicts the node's pods until none that must move is left.
func (f *Flow) drain(ctx context.Context, api *kubeapi.Client, name string) error {
	timeout := orDefault(f.DrainTimeout, DefaultDrainTimeout)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	evicted := 0
	var left []string
	for {
		var list corev1.PodList
		q := url.Values{"fieldSelector": {"spec.nodeName=" + name}}
		if _, err := api.Do(dctx, http.MethodGet, "/api/v1/pods?"+q.Encode(), "", nil, &list); err != nil {
			switch {
			case cutByDeadline(dctx) && len(left) > 0:
				return fmt.Errorf("draining: pods still on the node after %s: %s", timeout, strings.Join(left, ", "))
			case cutByDeadline(dctx):
				return fmt.Errorf("draining: not done within %s: %w", timeout, err)
			}
			return fmt.Errorf("draining: listing its pods: %w", err)
		}
		left = nil
		for _, p := range list.Items {
			if staysOnNode(&p) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			left = append(left, p.Namespace+"/"+p.Name)
			ev := policyv1.Eviction{
				TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
				ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
			}
			body, _ := json.Marshal(&ev)
			path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/eviction", url.PathEscape(p.Namespace), url.PathEscape(p.Name))
			code, err := api.Do(dctx, http.MethodPost, path, "application/json", body, nil)
			switch {
			case err == nil:
				evicted++
			case code == http.StatusNotFound:
				// gone meanwhile
			case code == http.StatusTooManyRequests:
				// a PodDisruptionBudget says not now: try again
			case dctx.Err() != nil:
			default:
				return fmt.Errorf("draining: evicting %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
		if len(left) == 0 {
			f.progress("%s: drained (%d pod(s) evicted)", name, evicted)
			return nil
		}
		select {
		case <-dctx.Done():
			return fmt.Errorf("draining: pods still on the node after %s: %s", timeout, strings.Join(left, ", "))
		case <-time.After(orDefault(f.PollInterval, DefaultPollInterval)):
		}
	}
}

// staysOnNode reports pods a drain leaves: DaemonSet pods and mirrors of
// static pods.
func staysOnNode(p *corev1.Pod) bool {
	if _, ok := p.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return true
	}
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller && o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

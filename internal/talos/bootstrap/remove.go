package bootstrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	api := &kubeAPI{hc: hc, server: kc.Server}
	for _, name := range names {
		if err := f.removeNode(ctx, api, name); err != nil {
			return fmt.Errorf("removing node %s from kubernetes: %w", name, err)
		}
	}
	return nil
}

func (f *Flow) removeNode(ctx context.Context, api *kubeAPI, name string) error {
	path := "/api/v1/nodes/" + url.PathEscape(name)
	var node corev1.Node
	code, err := api.do(ctx, http.MethodGet, path, "", nil, &node)
	switch {
	case code == http.StatusNotFound:
		f.progress("%s: not a kubernetes node (never joined or removed already)", name)
		return nil
	case err != nil:
		return fmt.Errorf("reading the node: %w", err)
	}
	if !node.Spec.Unschedulable {
		patch := []byte(`{"spec":{"unschedulable":true}}`)
		if _, err := api.do(ctx, http.MethodPatch, path, "application/merge-patch+json", patch, &node); err != nil {
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
	if code, err := api.do(ctx, http.MethodDelete, path, "", nil, nil); err != nil && code != http.StatusNotFound {
		return fmt.Errorf("deleting the node: %w", err)
	}
	f.progress("%s: node deleted from kubernetes", name)
	return nil
}

// drain evicts the node's pods until none that must move is left.
func (f *Flow) drain(ctx context.Context, api *kubeAPI, name string) error {
	timeout := orDefault(f.DrainTimeout, DefaultDrainTimeout)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	evicted := 0
	var left []string
	for {
		var list corev1.PodList
		q := url.Values{"fieldSelector": {"spec.nodeName=" + name}}
		if _, err := api.do(dctx, http.MethodGet, "/api/v1/pods?"+q.Encode(), "", nil, &list); err != nil {
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
			code, err := api.do(dctx, http.MethodPost, path, "application/json", body, nil)
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

// kubeAPI is a minimal client of the Kubernetes API.
type kubeAPI struct {
	hc     *http.Client
	server string
}

// do sends one request and decodes a 2xx answer into out (when not nil).
// The error carries the API's Status message.
func (k *kubeAPI) do(ctx context.Context, method, path, contentType string, body []byte, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, k.server+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		var st metav1.Status
		msg := firstLine(data)
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, msg)
	}
	if out != nil {
		// Leniently: a newer kube-apiserver (after homelab upgrade) or an
		// alpha feature adds fields this build does not know.
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: the answer is not the expected object: %v", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

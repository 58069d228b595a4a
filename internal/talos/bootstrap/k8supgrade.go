package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/siderolabs/talos/pkg/machinery/api/common"
	"github.com/siderolabs/talos/pkg/machinery/api/machine"
)

// versionRE is what a Talos or Kubernetes version looks like.
var versionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

// controlPlaneComponents are the static pods of a control plane, by the
// image name Talos runs them from.
var controlPlaneComponents = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// NodeVersions is what one node reports.
type NodeVersions struct {
	Name         string
	ControlPlane bool
	// Talos is the version the node runs (a stand-in's tag without its
	// -homelab-standin suffix).
	Talos string
	// Kubernetes is its kubelet's version (the kubelet image tag), and
	// on control planes Components the static pods' versions by name.
	Kubernetes string
	Components map[string]string
	// Standin is true when the node says it is a homelab stand-in.
	Standin bool
}

// Versions asks every node for its Talos version (Version) and its
// Kubernetes version (the kubelet's and the static pods' images, listed
// by Containers), with the lab's certificates. A node that does not
// answer is an error naming it; the others are still returned.
func (f *Flow) Versions(ctx context.Context) ([]NodeVersions, error) {
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("reading the nodes' versions: %w", err)
	}
	var out []NodeVersions
	var errs []error
	for _, n := range f.rolloutOrder() {
		v, err := f.nodeVersions(ctx, n)
		if err != nil {
			errs = append(errs, &NodeError{Node: n.Name, Addr: n.Addr, Err: err})
			continue
		}
		out = append(out, v)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("reading the nodes' versions: %w", errors.Join(errs...))
	}
	return out, nil
}

func (f *Flow) nodeVersions(ctx context.Context, n *Node) (NodeVersions, error) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	out := NodeVersions{Name: n.Name, ControlPlane: n.ControlPlane}
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return out, err
	}
	defer c.Close()
	v, err := c.Version(cctx)
	if err != nil {
		return out, fmt.Errorf("reading its talos version: %w", shortErr(err))
	}
	out.Standin = isStandin(v)
	for _, m := range v.GetMessages() {
		out.Talos = strings.TrimSuffix(m.GetVersion().GetTag(), "-homelab-standin")
	}
	sys, err := c.Containers(cctx, "system", common.ContainerDriver_CONTAINERD)
	if err != nil {
		return out, fmt.Errorf("listing its system containers: %w", shortErr(err))
	}
	out.Kubernetes = componentVersion(sys, "kubelet")
	if n.ControlPlane {
		pods, err := c.Containers(cctx, "k8s.io", common.ContainerDriver_CRI)
		if err != nil {
			return out, fmt.Errorf("listing its kubernetes containers: %w", shortErr(err))
		}
		out.Components = map[string]string{}
		for _, comp := range controlPlaneComponents {
			out.Components[comp] = componentVersion(pods, comp)
		}
	}
	return out, nil
}

// componentVersion is the tag of the image .../<name>:<tag> a container
// runs ("" when none does).
func componentVersion(resp *machine.ContainersResponse, name string) string {
	for _, m := range resp.GetMessages() {
		for _, c := range m.GetContainers() {
			img := c.GetImage()
			i := strings.LastIndexByte(img, ':')
			if i < 0 {
				continue
			}
			repo := img[:i]
			if repo == name || strings.HasSuffix(repo, "/"+name) {
				return img[i+1:]
			}
		}
	}
	return ""
}

// KubernetesAt reports whether the node runs version everywhere: its
// kubelet and, on control planes, every static pod.
func (v NodeVersions) KubernetesAt(version string) bool {
	if v.Kubernetes != version {
		return false
	}
	for _, comp := range controlPlaneComponents {
		if v.ControlPlane && v.Components[comp] != version {
			return false
		}
	}
	return true
}

// KubernetesSummary is the node's Kubernetes version for a plan: the
// kubelet's, and the static pods' when they differ from it.
func (v NodeVersions) KubernetesSummary() string {
	s := v.Kubernetes
	if s == "" {
		s = "unknown"
	}
	var other []string
	for _, comp := range controlPlaneComponents {
		if c, ok := v.Components[comp]; ok && c != v.Kubernetes {
			other = append(other, comp+" "+c)
		}
	}
	if len(other) > 0 {
		s += " (" + strings.Join(other, ", ") + ")"
	}
	return s
}

// UpgradeKubernetes rolls the cluster to Kubernetes version as Talos
// does it: each node's machine config, rendered again for that version
// (Node.Config), is applied without a reboot, so that Talos restarts the
// kubelet and, on control planes, the static pods with the new images.
// Control planes go first, then workers, one node at a time: the next
// starts only once the previous one runs version (kubelet and static
// pods, as listed by Containers) with its Talos services healthy and,
// given a kubeconfig, the Kubernetes API ready. A node that does not get
// there stops the rollout with an error naming it and what was not
// healthy; the nodes after it are left alone.
func (f *Flow) UpgradeKubernetes(ctx context.Context, version string, kubeconfig []byte) (*UpgradeResult, error) {
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("upgrading kubernetes: %w", err)
	}
	if !versionRE.MatchString(version) {
		return nil, fmt.Errorf("upgrading kubernetes: %q is not a version like v1.36.3", version)
	}
	order := f.rolloutOrder()
	for _, n := range order {
		// The kubelet image tag is the version (kubelet:v1.36.3).
		if !bytes.Contains(n.Config, []byte(":"+version+"\n")) && !bytes.Contains(n.Config, []byte(":"+version+"\"")) {
			return nil, fmt.Errorf("upgrading kubernetes: the machine config rendered for %s does not carry kubernetes %s", n.Name, version)
		}
	}
	res := &UpgradeResult{}
	for i, n := range order {
		stop := func(err error) (*UpgradeResult, error) {
			for _, r := range order[i+1:] {
				res.Remaining = append(res.Remaining, r.Name)
			}
			msg := "upgrading kubernetes: rollout stopped"
			if len(res.Remaining) > 0 {
				msg += fmt.Sprintf(" (%s not upgraded)", strings.Join(res.Remaining, ", "))
			}
			return res, fmt.Errorf("%s: %w", msg, err)
		}
		cur, err := f.nodeVersions(ctx, n)
		if err != nil {
			return stop(&NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("reading its versions before the upgrade: %w", err)})
		}
		if cur.KubernetesAt(version) {
			f.progress("%s: kubernetes already at %s", n.Name, version)
			res.Current = append(res.Current, n.Name)
			continue
		}
		f.progress("%s: kubernetes %s -> %s (machine config applied without reboot)", n.Name, cur.KubernetesSummary(), version)
		if err := f.applyConfigured(ctx, n, machine.ApplyConfigurationRequest_NO_REBOOT); err != nil {
			return stop(&NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("applying its machine config for kubernetes %s: %w", version, err)})
		}
		if err := f.waitKubernetes(ctx, n, version, kubeconfig); err != nil {
			return stop(err)
		}
		res.Upgraded = append(res.Upgraded, n.Name)
		f.progress("%s: kubernetes %s and healthy", n.Name, version)
	}
	return res, nil
}

// applyConfigured applies a configured node's config with the lab's
// certificates (a configured node refuses anonymous clients).
func (f *Flow) applyConfigured(ctx context.Context, n *Node, mode machine.ApplyConfigurationRequest_Mode) error {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.ApplyConfiguration(cctx, &machine.ApplyConfigurationRequest{Data: n.Config, Mode: mode})
	return shortErr(err)
}

// cutByDeadline reports whether ctx ended, or is about to: a call cut by
// its deadline may fail a little before ctx.Err() says so.
func cutByDeadline(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < 100*time.Millisecond
}

// waitKubernetes waits until the node runs version and is healthy.
func (f *Flow) waitKubernetes(ctx context.Context, n *Node, version string, kubeconfig []byte) error {
	return f.waitNode(ctx, n, "at kubernetes "+version+" and healthy", func(ctx context.Context) error {
		v, err := f.nodeVersions(ctx, n)
		switch {
		case err != nil:
			return err
		case !v.KubernetesAt(version):
			return fmt.Errorf("still at kubernetes %s", v.KubernetesSummary())
		}
		if err := f.nodeHealthy(ctx, n, kubeconfig); err != nil {
			return fmt.Errorf("at kubernetes %s but not healthy: %w", version, err)
		}
		return nil
	})
}

package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"

	"github.com/homelab-dev/homelab/internal/kubeapi"
)

// UpgradeResult says what a rollout did.
type UpgradeResult struct {
	// Upgraded lists the nodes upgraded in this run, in order; Current
	// those already at the version.
	Upgraded, Current []string
	// Remaining lists the nodes not touched because the rollout stopped.
	Remaining []string
}

// Upgrade rolls the nodes to the Talos installer image (its tag is
// version; keep the lab's Image Factory schematic in it, see
// talos.InstallerImage, so that extensions survive), one node at a time
// control planes first, then workers, each in the Flow's order: the next node starts only once the previous one is
// back at version with its services healthy (and, given a kubeconfig, the
// Kubernetes API ready). A node that does not come back stops the rollout
// with an error naming it; the nodes after it are left alone.
func (f *Flow) Upgrade(ctx context.Context, image, version string, kubeconfig []byte) (*UpgradeResult, error) {
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("upgrading talos: %w", err)
	}
	if image == "" || version == "" || !strings.HasSuffix(image, ":"+version) {
		return nil, fmt.Errorf("upgrading talos: installer image %q does not carry the version %q as its tag", image, version)
	}
	res := &UpgradeResult{}
	order := f.rolloutOrder()
	for i, n := range order {
		stop := func(err error) (*UpgradeResult, error) {
			for _, r := range order[i+1:] {
				res.Remaining = append(res.Remaining, r.Name)
			}
			msg := "upgrading talos: rollout stopped"
			if len(res.Remaining) > 0 {
				msg += fmt.Sprintf(" (%s not upgraded)", strings.Join(res.Remaining, ", "))
			}
			return res, fmt.Errorf("%s: %w", msg, err)
		}
		tag, err := f.versionOf(ctx, n)
		if err != nil {
			return stop(&NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("reading its version before the upgrade: %w", err)})
		}
		if sameVersion(tag, version) {
			f.progress("%s: already at %s", n.Name, version)
			res.Current = append(res.Current, n.Name)
			continue
		}
		f.progress("%s: upgrading from %s to %s", n.Name, tag, version)
		if err := f.startUpgrade(ctx, n, image); err != nil {
			return stop(&NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("starting the upgrade: %w", err)})
		}
		if err := f.waitUpgraded(ctx, n, version, kubeconfig); err != nil {
			return stop(err)
		}
		res.Upgraded = append(res.Upgraded, n.Name)
		f.progress("%s: at %s and healthy", n.Name, version)
	}
	return res, nil
}

// sameVersion compares a reported tag with the wanted version; stand-ins
// add a suffix to theirs.
func sameVersion(tag, version string) bool {
	return tag == version || strings.HasPrefix(tag, version+"-homelab-standin")
}

func (f *Flow) versionOf(ctx context.Context, n *Node) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return "", err
	}
	defer c.Close()
	v, err := c.Version(cctx)
	if err != nil {
		return "", shortErr(err)
	}
	for _, m := range v.GetMessages() {
		return m.GetVersion().GetTag(), nil
	}
	return "", errors.New("empty version answer")
}

func (f *Flow) startUpgrade(ctx context.Context, n *Node, image string) error {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return err
	}
	defer c.Close()
	// MachineService.Upgrade is deprecated in favour of LifecycleService
	// in Talos 1.13 but still served, with the semantics this rollout
	// needs: install the image, reboot into it, keep the data (preserve).
	//lint:ignore SA1019 see above
	_, err = c.MachineClient.Upgrade(cctx, &machine.UpgradeRequest{Image: image, Preserve: true})
	return shortErr(err)
}

// waitUpgraded waits until the node answers at version with healthy
// services, and the Kubernetes API is ready when a kubeconfig is given.
func (f *Flow) waitUpgraded(ctx context.Context, n *Node, version string, kubeconfig []byte) error {
	return f.waitNode(ctx, n, "back at "+version+" and healthy", func(ctx context.Context) error {
		tag, err := f.versionOf(ctx, n)
		switch {
		case err != nil:
			return err
		case !sameVersion(tag, version):
			return fmt.Errorf("still at %s", tag)
		}
		if err := f.nodeHealthy(ctx, n, kubeconfig); err != nil {
			return fmt.Errorf("at %s but not healthy: %w", version, err)
		}
		return nil
	})
}

// waitNode polls check on n until it passes (nil), for at most the node
// timeout; the error names the node, what it was not, within which bound,
// and the last reason check gave (not the deadline's own error, when a
// round is cut by it).
func (f *Flow) waitNode(ctx context.Context, n *Node, what string, check func(context.Context) error) error {
	timeout := orDefault(f.NodeTimeout, DefaultNodeTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		why := check(wctx)
		if why == nil {
			return nil
		}
		if last == nil || !cutByDeadline(wctx) {
			last = why
		}
		select {
		case <-wctx.Done():
			return &NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("not %s within %s: %w", what, timeout, last)}
		case <-time.After(orDefault(f.PollInterval, DefaultPollInterval)):
		}
	}
}

// nodeHealthy checks one node's Talos services and, given a kubeconfig,
// the Kubernetes API's /readyz; the error lists what failed.
func (f *Flow) nodeHealthy(ctx context.Context, n *Node, kubeconfig []byte) error {
	rep := &Report{}
	add := func(name string, st Status, format string, args ...any) {
		rep.Checks = append(rep.Checks, Check{Name: name, Status: st, Detail: fmt.Sprintf(format, args...)})
	}
	f.talosChecks(ctx, n, n == f.bootstrapNode(), false, add)
	if len(kubeconfig) > 0 {
		f.readyzCheck(ctx, kubeconfig, add)
	}
	if rep.Healthy() {
		return nil
	}
	var bad []string
	for _, c := range rep.Failed() {
		bad = append(bad, c.Name+": "+c.Detail)
	}
	return errors.New(strings.Join(bad, "; "))
}

// rolloutOrder is the order of upgrades: control planes first, then
// workers, each in the Flow's order.
func (f *Flow) rolloutOrder() []*Node {
	var cps, workers []*Node
	for i := range f.Nodes {
		if f.Nodes[i].ControlPlane {
			cps = append(cps, &f.Nodes[i])
		} else {
			workers = append(workers, &f.Nodes[i])
		}
	}
	return append(cps, workers...)
}

func (f *Flow) readyzCheck(ctx context.Context, kubeconfig []byte, add addFunc) {
	kc, err := ParseKubeconfig(kubeconfig)
	if err != nil {
		add("kubernetes /readyz", Failed, "%v", err)
		return
	}
	hc, err := kc.HTTPClient(f.Dialer, orDefault(f.CallTimeout, DefaultCallTimeout))
	if err != nil {
		add("kubernetes /readyz", Failed, "%v", err)
		return
	}
	code, body, err := (&kubeapi.Client{HTTP: hc, Server: kc.Server}).Get(ctx, "/readyz")
	switch {
	case err != nil:
		add("kubernetes /readyz", Failed, "%s: %v", kc.Server, err)
	case code != 200:
		add("kubernetes /readyz", Failed, "%s answered %d: %s", kc.Server, code, kubeapi.FirstLine(body))
	default:
		add("kubernetes /readyz", OK, "%s ready", kc.Server)
	}
}

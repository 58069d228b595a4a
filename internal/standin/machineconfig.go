package standin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
)

// appliedConfig is what a stand-in takes from an applied machine config:
// the CAs it issues its certificates from, as a Talos node does, and the
// images whose tags say which versions it runs. The CA keys are secrets:
// never log this.
type appliedConfig struct {
	// machine.ca: the Talos API server certificate is issued from it and
	// verifies clients (the talosconfig's admin certificate).
	machineCA, machineCAKey []byte
	// cluster.ca (control planes): the Kubernetes API certificate and
	// the admin kubeconfig are issued from it.
	clusterCA, clusterCAKey []byte
	// machine.certSANs and cluster.apiServer.certSANs.
	talosSANs, kubeSANs []string
	clusterName         string
	// kubelet and kube-apiserver images (the latter on control planes).
	kubeletImage, apiServerImage string
	// static pods' images on control planes.
	controllerManagerImage, schedulerImage string
	// machine.install.image: the installer the node was configured with.
	installImage string
	// machine.token authenticates a node to trustd; endpointHost is the
	// host of cluster.controlPlane.endpoint, where a worker asks trustd
	// for its certificate.
	machineToken, endpointHost string
}

// parseMachineConfig loads a machine config with machinery's loader
// (strict: unknown fields and malformed documents fail) and reads what a
// stand-in needs from it. Errors never quote the config.
func parseMachineConfig(data []byte) (*appliedConfig, error) {
	p, err := configloader.NewFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("the machine configuration does not load: %w", scrub(err))
	}
	raw := p.RawV1Alpha1()
	if raw == nil || raw.MachineConfig == nil {
		return nil, errors.New("the machine configuration has no v1alpha1 machine section")
	}
	ac := &appliedConfig{}
	m := p.Machine()
	if ca := m.Security().IssuingCA(); ca != nil {
		ac.machineCA, ac.machineCAKey = ca.Crt, ca.Key
	}
	ac.talosSANs = m.Security().CertSANs()
	ac.machineToken = m.Security().Token()
	ac.kubeletImage = m.Kubelet().Image()
	ac.installImage = m.Install().Image()
	if raw.ClusterConfig != nil {
		c := p.Cluster()
		ac.clusterName = c.Name()
		if ca := c.IssuingCA(); ca != nil {
			ac.clusterCA, ac.clusterCAKey = ca.Crt, ca.Key
		}
		ac.kubeSANs = c.CertSANs()
		if raw.ClusterConfig.ControlPlane != nil && c.Endpoint() != nil {
			ac.endpointHost = c.Endpoint().Hostname()
		}
		if p.Machine().Type().IsControlPlane() {
			ac.apiServerImage = c.APIServer().Image()
			ac.controllerManagerImage = c.ControllerManager().Image()
			ac.schedulerImage = c.Scheduler().Image()
		}
	}
	return ac, nil
}

// scrub keeps only the first line of a loader error, and at most 200
// bytes of it: decoder errors can quote the document.
func scrub(err error) error {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return errors.New(s)
}

// imageTag is the tag of an image reference ("" when it has none).
func imageTag(image string) string {
	if i := strings.LastIndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	i := strings.LastIndexByte(image, ':')
	if i < 0 || strings.Contains(image[i:], "/") {
		return ""
	}
	return image[i+1:]
}

// ImageSchematic is the Image Factory schematic ID of an installer image
// such as factory.talos.dev/installer/<id>:v1.13.9 (or a platform's
// <platform>-installer), "" for an image not from the factory (the
// vanilla ghcr.io/siderolabs/installer: no extensions).
func ImageSchematic(image string) string {
	if i := strings.LastIndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if tag := imageTag(image); tag != "" {
		image = strings.TrimSuffix(image, ":"+tag)
	}
	parts := strings.Split(image, "/")
	if len(parts) < 3 || !strings.HasSuffix(parts[len(parts)-2], "installer") {
		return ""
	}
	id := parts[len(parts)-1]
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return ""
	}
	return id
}

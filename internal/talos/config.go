package talos

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/siderolabs/talos/pkg/machinery/cel"
	"github.com/siderolabs/talos/pkg/machinery/cel/celenv"
	clientconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	coreconfig "github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/config"
	"github.com/siderolabs/talos/pkg/machinery/config/container"
	"github.com/siderolabs/talos/pkg/machinery/config/encoder"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/config/types/network"
	"github.com/siderolabs/talos/pkg/machinery/config/types/v1alpha1"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// DefaultInstallDisk is where Talos installs when the spec names no disk.
const DefaultInstallDisk = "/dev/sda"

// NodeConfig is the machine config of one Talos node.
type NodeConfig struct {
	Machine spec.Machine
	// Data is the machine config YAML. It holds the cluster's CA keys and
	// tokens: write it 0600 and never log it.
	Data []byte
}

// linkName is what a network name must look like to serve as a Linux link
// alias (15 bytes at most).
var linkName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,14}$`)

// MachineConfigs generates the machine config of every control plane and
// worker of the lab with machinery's generator and the bundle's secrets, for
// the version contract of the lab's Talos version, and patches each node:
// hostname = machine name; each NIC found by its stable MAC, named after its
// network and given its static address; the default route via the admin
// network's gateway; kubelet and etcd on the admin network; the install
// disk and the Image Factory installer of the lab's schematic. It also
// returns the talosconfig (endpoints: the control planes' admin addresses).
//
// The result depends only on the lab and the bundle: the same inputs give
// identical bytes.
func MachineConfigs(lab *spec.Lab, b *secrets.Bundle) ([]NodeConfig, []byte, error) {
	if b == nil || b.Talos == nil {
		return nil, nil, errors.New("generating talos machine configs: the secrets bundle has no talos secrets")
	}
	if b.TalosAdmin == nil {
		return nil, nil, errors.New("generating talos machine configs: the secrets bundle has no talos admin certificate")
	}
	contract, err := coreconfig.ParseContractFromVersion(lab.Cluster.TalosVersion)
	if err != nil {
		return nil, nil, fmt.Errorf("generating talos machine configs: cluster.talosVersion %q: %w", lab.Cluster.TalosVersion, err)
	}
	k8s := strings.TrimPrefix(lab.Cluster.KubernetesVersion, "v")
	if k8s == "" {
		return nil, nil, errors.New("generating talos machine configs: cluster.kubernetesVersion is empty")
	}
	admin, ok := lab.NetworkByRole(spec.RoleAdmin)
	if !ok {
		return nil, nil, errors.New("generating talos machine configs: the lab has no admin network")
	}

	var nodes []spec.Machine
	var cpAddrs []string
	for _, m := range lab.Machines() {
		switch m.Role {
		case spec.MachineControlPlane:
			a, ok := m.Address(spec.RoleAdmin)
			if !ok || !a.IsValid() {
				return nil, nil, fmt.Errorf("generating talos machine configs: %s has no address on the admin network", m.Name)
			}
			cpAddrs = append(cpAddrs, a.String())
		case spec.MachineWorker:
		default:
			continue
		}
		nodes = append(nodes, m)
	}
	if len(cpAddrs) == 0 {
		return nil, nil, errors.New("generating talos machine configs: the cluster has no control plane")
	}
	endpoint := Endpoint(lab)

	_, schematicID, err := Schematic(lab)
	if err != nil {
		return nil, nil, err
	}
	disk := lab.Cluster.InstallDisk
	if disk == "" {
		disk = DefaultInstallDisk
	}
	clusterName := lab.Cluster.Name
	if clusterName == "" {
		clusterName = lab.Name
	}

	in, err := generate.NewInput(clusterName, endpoint, k8s,
		generate.WithVersionContract(contract),
		generate.WithSecretsBundle(b.Talos),
		generate.WithInstallDisk(disk),
		generate.WithInstallImage(InstallerImage(lab, schematicID)),
		generate.WithAdditionalSubjectAltNames(cpAddrs),
		generate.WithEndpointList(cpAddrs),
		generate.WithAllowSchedulingOnControlPlanes(lab.Cluster.Workers.Count == 0),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("generating talos machine configs: %w", err)
	}

	var out []NodeConfig
	for _, m := range nodes {
		typ := machine.TypeWorker
		if m.Role == spec.MachineControlPlane {
			typ = machine.TypeControlPlane
		}
		base, err := in.Config(typ)
		if err != nil {
			return nil, nil, fmt.Errorf("generating the talos machine config of %s: %w", m.Name, err)
		}
		cfg, err := patchNode(base, m, admin.CIDR, contract.MultidocNetworkConfigSupported())
		if err != nil {
			return nil, nil, fmt.Errorf("patching the talos machine config of %s: %w", m.Name, err)
		}
		data, err := cfg.EncodeBytes(encoder.WithComments(encoder.CommentsDisabled))
		if err != nil {
			return nil, nil, fmt.Errorf("encoding the talos machine config of %s: %w", m.Name, err)
		}
		out = append(out, NodeConfig{Machine: m, Data: data})
	}

	tc := clientconfig.NewConfig(clusterName, cpAddrs, b.Talos.Certs.OS.Crt, b.TalosAdmin)
	tc.Contexts[clusterName].Nodes = cpAddrs[:1]
	talosconfig, err := tc.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the talosconfig: %w", err)
	}
	return out, talosconfig, nil
}

// Endpoint is the Kubernetes API URL of the lab: cluster.endpoint, else
// https://<first control plane's admin address>:6443 ("" when there is none).
func Endpoint(lab *spec.Lab) string {
	if lab.Cluster.Endpoint != "" {
		return lab.Cluster.Endpoint
	}
	for _, m := range lab.Machines() {
		if m.Role != spec.MachineControlPlane {
			continue
		}
		if a, ok := m.Address(spec.RoleAdmin); ok && a.IsValid() {
			return "https://" + netip.AddrPortFrom(a, 6443).String()
		}
	}
	return ""
}

// patchNode applies the per-node settings to a generated config. Talos
// versions with multi-document network config (1.12 and later) get
// HostnameConfig, LinkAliasConfig (the NIC chosen by MAC) and LinkConfig
// documents; older ones get the same in machine.network, with a
// deviceSelector on the hardware address.
func patchNode(base coreconfig.Provider, m spec.Machine, adminCIDR netip.Prefix, multidoc bool) (coreconfig.Provider, error) {
	for _, n := range m.NICs {
		if !n.Address.IsValid() {
			return nil, fmt.Errorf("%s has no address on network %s", m.Name, n.Network)
		}
		if !linkName.MatchString(n.Network) {
			return nil, fmt.Errorf("network name %q cannot name a link (lowercase letters, digits and '-', at most 15)", n.Network)
		}
	}
	cfg, err := base.PatchV1Alpha1(func(c *v1alpha1.Config) error {
		mc := c.MachineConfig
		if mc.MachineKubelet == nil {
			mc.MachineKubelet = &v1alpha1.KubeletConfig{}
		}
		mc.MachineKubelet.KubeletNodeIP = &v1alpha1.KubeletNodeIPConfig{
			KubeletNodeIPValidSubnets: []string{adminCIDR.String()},
		}
		if m.Role == spec.MachineControlPlane && c.ClusterConfig != nil {
			if c.ClusterConfig.EtcdConfig == nil {
				c.ClusterConfig.EtcdConfig = &v1alpha1.EtcdConfig{}
			}
			c.ClusterConfig.EtcdConfig.EtcdAdvertisedSubnets = []string{adminCIDR.String()}
		}
		if !multidoc {
			legacyNetwork(mc, m)
		}
		return nil
	})
	if err != nil || !multidoc {
		return cfg, err
	}

	var docs []config.Document
	for _, d := range cfg.Documents() {
		if d.Kind() == network.HostnameKind {
			continue // replaced by the static hostname below
		}
		docs = append(docs, d.Clone())
	}
	host := network.NewHostnameConfigV1Alpha1()
	host.ConfigHostname = m.Name
	docs = append(docs, host)
	for _, n := range m.NICs {
		alias := network.NewLinkAliasConfigV1Alpha1(n.Network)
		expr, err := cel.ParseBooleanExpression(fmt.Sprintf("mac(link.permanent_addr) == %q", n.MAC.String()), celenv.LinkLocator())
		if err != nil {
			return nil, fmt.Errorf("selecting the link of %s: %w", n.Network, err)
		}
		alias.Selector.Match = expr
		link := network.NewLinkConfigV1Alpha1(n.Network)
		link.LinkUp = new(true)
		link.LinkAddresses = []network.AddressConfig{{AddressAddress: netip.PrefixFrom(n.Address, n.Prefix.Bits())}}
		if n.Role == spec.RoleAdmin && n.Gateway.IsValid() {
			link.LinkRoutes = []network.RouteConfig{{RouteGateway: network.Addr{Addr: n.Gateway}}}
		}
		docs = append(docs, alias, link)
	}
	return container.New(docs...)
}

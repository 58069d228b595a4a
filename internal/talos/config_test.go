package talos

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	clientconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	coreconfig "github.com/siderolabs/talos/pkg/machinery/config"
	cfgdoc "github.com/siderolabs/talos/pkg/machinery/config/config"
	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

func TestMachineConfigsValidate(t *testing.T) {
	for _, tt := range []struct {
		talos         string
		controlPlanes int
	}{
		{"v1.13.9", 1},
		{"v1.13.9", 3},
		{"v1.11.5", 3}, // legacy machine.network section
	} {
		t.Run(fmt.Sprintf("%s/%dcp", tt.talos, tt.controlPlanes), func(t *testing.T) {
			lab := testLab(tt.talos, tt.controlPlanes)
			nodes, talosconfig, err := MachineConfigs(lab, testBundle(t))
			if err != nil {
				t.Fatalf("MachineConfigs: %v", err)
			}
			if got, want := len(nodes), tt.controlPlanes+2; got != want {
				t.Fatalf("MachineConfigs gave %d configs, want %d", got, want)
			}
			for _, n := range nodes {
				if err := Validate(n.Data); err != nil {
					t.Errorf("Validate(%s): %v", n.Machine.Name, err)
				}
			}
			tc, err := clientconfig.FromBytes(talosconfig)
			if err != nil {
				t.Fatalf("parsing talosconfig: %v", err)
			}
			ctx := tc.Contexts[tc.Context]
			if ctx == nil {
				t.Fatalf("talosconfig has no context %q", tc.Context)
			}
			want := []string{"10.10.1.11", "10.10.1.12", "10.10.1.13"}[:tt.controlPlanes]
			if !slices.Equal(ctx.Endpoints, want) {
				t.Errorf("talosconfig endpoints = %v, want %v", ctx.Endpoints, want)
			}
			if ctx.CA == "" || ctx.Crt == "" || ctx.Key == "" {
				t.Errorf("talosconfig lacks CA, certificate or key")
			}
		})
	}
}

func TestMachineConfigsDeterministic(t *testing.T) {
	lab := testLab("v1.13.9", 3)
	b := testBundle(t)
	n1, tc1, err := MachineConfigs(lab, b)
	if err != nil {
		t.Fatal(err)
	}
	n2, tc2, err := MachineConfigs(testLab("v1.13.9", 3), b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tc1, tc2) {
		t.Errorf("talosconfig differs between two runs")
	}
	for i := range n1 {
		if !bytes.Equal(n1[i].Data, n2[i].Data) {
			t.Errorf("machine config of %s differs between two runs", n1[i].Machine.Name)
		}
	}
}

// TestMachineConfigsPatched decodes every config back with machinery's
// loader and checks the per-node settings.
func TestMachineConfigsPatched(t *testing.T) {
	for _, version := range []string{"v1.13.9", "v1.11.5"} {
		t.Run(version, func(t *testing.T) {
			lab := testLab(version, 3)
			nodes, _, err := MachineConfigs(lab, testBundle(t))
			if err != nil {
				t.Fatal(err)
			}
			_, schematicID, err := Schematic(lab)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				cfg, err := configloader.NewFromBytes(n.Data)
				if err != nil {
					t.Fatalf("loading the config of %s: %v", n.Machine.Name, err)
				}
				checkNode(t, lab, n.Machine, cfg, schematicID, version == "v1.13.9")
			}
		})
	}
}

func checkNode(t *testing.T, lab *spec.Lab, m spec.Machine, cfg coreconfig.Provider, schematicID string, multidoc bool) {
	t.Helper()
	wantType := machine.TypeWorker
	if m.Role == spec.MachineControlPlane {
		wantType = machine.TypeControlPlane
	}
	if got := cfg.Machine().Type(); got != wantType {
		t.Errorf("%s: machine type = %v, want %v", m.Name, got, wantType)
	}
	if got, want := cfg.Cluster().Endpoint().String(), "https://10.10.1.11:6443"; got != want {
		t.Errorf("%s: cluster endpoint = %q, want %q", m.Name, got, want)
	}
	if got, want := cfg.Machine().Install().Disk(), "/dev/sda"; got != want {
		t.Errorf("%s: install disk = %q, want %q", m.Name, got, want)
	}
	if got, want := cfg.Machine().Install().Image(), "factory.talos.dev/installer/"+schematicID+":"+lab.Cluster.TalosVersion; got != want {
		t.Errorf("%s: install image = %q, want %q", m.Name, got, want)
	}
	sans := cfg.Machine().Security().CertSANs()
	for _, cp := range []string{"10.10.1.11", "10.10.1.12", "10.10.1.13"} {
		if !slices.Contains(sans, cp) {
			t.Errorf("%s: machine certSANs %v lack %s", m.Name, sans, cp)
		}
		if m.Role == spec.MachineControlPlane && !slices.Contains(cfg.Cluster().CertSANs(), cp) {
			t.Errorf("%s: API server certSANs %v lack %s", m.Name, cfg.Cluster().CertSANs(), cp)
		}
	}
	if got := cfg.Machine().Kubelet().NodeIP().ValidSubnets(); !slices.Equal(got, []string{"10.10.1.0/24"}) {
		t.Errorf("%s: kubelet nodeIP validSubnets = %v, want [10.10.1.0/24]", m.Name, got)
	}

	if !multidoc {
		checkLegacyNetwork(t, m, cfg)
		return
	}
	if got := cfg.NetworkHostnameConfig().Hostname(); got != m.Name {
		t.Errorf("%s: hostname = %q", m.Name, got)
	}
	aliases := map[string]string{}
	for _, a := range cfg.NetworkLinkAliasConfigs() {
		aliases[a.Name()] = a.LinkSelector().String()
	}
	links := map[string]cfgdoc.NetworkCommonLinkConfig{}
	for _, l := range cfg.NetworkCommonLinkConfigs() {
		links[l.Name()] = l
	}
	if len(aliases) != len(m.NICs) || len(links) != len(m.NICs) {
		t.Errorf("%s: %d link aliases and %d links, want %d each", m.Name, len(aliases), len(links), len(m.NICs))
	}
	for _, nic := range m.NICs {
		sel, ok := aliases[nic.Network]
		if !ok {
			t.Errorf("%s: no link alias %q", m.Name, nic.Network)
		} else if !strings.Contains(sel, `"`+nic.MAC.String()+`"`) || !strings.Contains(sel, "permanent_addr") {
			t.Errorf("%s: link alias %q selector %q does not select MAC %s", m.Name, nic.Network, sel, nic.MAC)
		}
		l, ok := links[nic.Network]
		if !ok {
			t.Errorf("%s: no link config %q", m.Name, nic.Network)
			continue
		}
		var addrs []netip.Prefix
		for _, a := range l.Addresses() {
			addrs = append(addrs, a.Address())
		}
		if want := []netip.Prefix{netip.PrefixFrom(nic.Address, 24)}; !slices.Equal(addrs, want) {
			t.Errorf("%s: link %q addresses = %v, want %v", m.Name, nic.Network, addrs, want)
		}
		var gws []string
		for _, r := range l.Routes() {
			if _, ok := r.Destination().Get(); ok {
				t.Errorf("%s: link %q has a non-default route", m.Name, nic.Network)
			}
			if g, ok := r.Gateway().Get(); ok {
				gws = append(gws, g.String())
			}
		}
		var want []string
		if nic.Role == spec.RoleAdmin {
			want = []string{"10.10.1.1"}
		}
		if !slices.Equal(gws, want) {
			t.Errorf("%s: link %q default route gateways = %v, want %v", m.Name, nic.Network, gws, want)
		}
	}
}

func TestMachineConfigsErrors(t *testing.T) {
	b := testBundle(t)
	for _, tt := range []struct {
		name   string
		mutate func(*spec.Lab)
		bundle *secrets.Bundle
		want   string
	}{
		{"no talos secrets", nil, &secrets.Bundle{}, "no talos secrets"},
		{"bad talos version", func(l *spec.Lab) { l.Cluster.TalosVersion = "latest" }, b, "cluster.talosVersion"},
		{"no kubernetes version", func(l *spec.Lab) { l.Cluster.KubernetesVersion = "" }, b, "kubernetesVersion"},
		{"no control plane", func(l *spec.Lab) { l.Cluster.ControlPlanes.Count = 0 }, b, "no control plane"},
		{"worker without address", func(l *spec.Lab) { l.Cluster.Workers.Addresses["apps"] = nil }, b, "lab-worker-1 has no address on network apps"},
		{"bad extension", func(l *spec.Lab) { l.Cluster.Extensions = []string{"qemu: agent"} }, b, "cluster.extensions"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lab := testLab("v1.13.9", 1)
			if tt.mutate != nil {
				tt.mutate(lab)
			}
			_, _, err := MachineConfigs(lab, tt.bundle)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("MachineConfigs() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	nodes, _, err := MachineConfigs(testLab("v1.13.9", 1), testBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	last := nodes[len(nodes)-1]
	worker := last.Data
	hostname := []byte("hostname: " + last.Machine.Name)
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"not yaml", []byte("\t{{"), "loading talos machine config"},
		{"unknown field", []byte("version: v1alpha1\nmachine:\n  type: worker\n  bogus: 1\n"), "bogus"},
		{"hostname too long", replaceOnce(t, worker, hostname, []byte("hostname: "+strings.Repeat("x", 64))), "invalid hostname"},
		{"hostname and auto", replaceOnce(t, worker, hostname, append(hostname, "\nauto: stable"...)), "'auto' and 'hostname'"},
		{"bad address", replaceOnce(t, worker, []byte("address: 10.10.2."), []byte("address: 0.0.0.0/24\n      # ")), "address"},
		{"no install disk", replaceOnce(t, worker, []byte("disk: /dev/sda"), []byte("disk: \"\"")), "install"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// replaceOnce replaces old by new in data, failing the test when old is
// not there (so that a rejected config is rejected for the intended reason).
func replaceOnce(t *testing.T, data, old, new []byte) []byte {
	t.Helper()
	if bytes.Count(data, old) != 1 {
		t.Fatalf("config does not hold %q exactly once", old)
	}
	return bytes.Replace(data, old, new, 1)
}

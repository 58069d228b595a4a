package cli

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/standin"
)

func newStandinCmd() *cobra.Command {
	var (
		n                                        standin.Node
		role, admin, apps, caDir, ingress        string
		talosCA, talosCAKey, talosCert, talosKey string
		kubeCA, kubeCAKey, kubeCert, kubeKey     string
	)
	cmd := &cobra.Command{
		Use:   "standin --role controlplane|worker --name NODE",
		Short: "Run a stand-in for a Talos node (local provider only; not a real Talos node)",
		Long: `standin serves, on the network, what a Talos node serves, so that the local
provider can build the whole lab without virtual machines. It is a stand-in,
not Talos: every answer says so.

  Talos API        port 50000, gRPC over TLS (version, apply configuration,
                   bootstrap, kubeconfig, service list, etcd members,
                   upgrade, containers)
  trustd           control planes: port 50001, signs workers' Talos API
                   certificates (machine.token)
  Kubernetes API   control planes: port 6443, HTTPS /readyz /livez /version,
                   client certificate required (anonymous access off)
  ingress          workers: HTTP and HTTPS on the apps address (default
                   30080,30443), PROXY protocol v1/v2 accepted, answering
                   which node served and the client address it saw

Without TLS material, the node behaves as Talos: an ephemeral self-signed
certificate in maintenance mode, then, once a machine config is applied,
certificates issued from the config's machine.ca (workers: signed by a
control plane's trustd) and cluster.ca, which the lab's talosconfig and
kubeconfig verify. TLS material given with --ca-dir (files talos-ca.crt,
talos-ca.key, talos.crt, talos.key, kube-ca.crt, kube-ca.key, kube.crt,
kube.key) or the single-file flags is kept instead; a missing server
certificate is then issued from its CA and CA key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n.Role = standin.Role(role)
			if n.Role != standin.RoleControlPlane && n.Role != standin.RoleWorker {
				return withHint(fmt.Errorf("starting stand-in: unknown role %q", role), "use --role controlplane or --role worker")
			}
			if n.Name == "" {
				return withHint(fmt.Errorf("starting stand-in: no node name"), "pass --name NODE")
			}
			var err error
			if n.AdminAddr, err = optAddr(admin); err != nil {
				return withHint(fmt.Errorf("starting stand-in: --listen-admin: %w", err), "pass an IP address such as 10.10.1.21")
			}
			if n.AppsAddr, err = optAddr(apps); err != nil {
				return withHint(fmt.Errorf("starting stand-in: --listen-apps: %w", err), "pass an IP address such as 10.10.2.21")
			}
			if n.HTTPPort, n.HTTPSPort, err = parseIngressPorts(ingress); err != nil {
				return withHint(fmt.Errorf("starting stand-in: --ingress-ports: %w", err), "pass HTTP,HTTPS ports such as 30080,30443")
			}
			if caDir != "" {
				if n.Certs, err = standin.LoadCerts(caDir); err != nil {
					return err
				}
			}
			for _, f := range []struct {
				path string
				dst  *[]byte
			}{
				{talosCA, &n.Certs.TalosCA}, {talosCAKey, &n.Certs.TalosCAKey}, {talosCert, &n.Certs.TalosCert}, {talosKey, &n.Certs.TalosKey},
				{kubeCA, &n.Certs.KubeCA}, {kubeCAKey, &n.Certs.KubeCAKey}, {kubeCert, &n.Certs.KubeCert}, {kubeKey, &n.Certs.KubeKey},
			} {
				if f.path == "" {
					continue
				}
				if *f.dst, err = os.ReadFile(f.path); err != nil {
					return fmt.Errorf("starting stand-in: %w", err)
				}
			}
			n.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("component", "homelab-standin")
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s (not a real Talos node)\n", standin.Marker, n.Role, n.Name)
			return n.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "worker", "controlplane or worker")
	f.StringVar(&n.Name, "name", "", "node name (hostname)")
	f.StringVar(&admin, "listen-admin", "", "admin-network address for the Talos and Kubernetes APIs (default all)")
	f.StringVar(&apps, "listen-apps", "", "apps-network address for a worker's ingress ports (default all)")
	f.StringVar(&ingress, "ingress-ports", fmt.Sprintf("%d,%d", standin.DefaultHTTPPort, standin.DefaultHTTPSPort), "a worker's HTTP,HTTPS ingress ports")
	f.StringVar(&n.TalosVersion, "talos-version", standin.DefaultTalosVersion, "Talos version to report")
	f.StringVar(&n.KubernetesVersion, "kubernetes-version", standin.DefaultKubernetesVersion, "Kubernetes version to report")
	f.StringVar(&n.ClusterName, "cluster-name", "homelab", "cluster name in issued kubeconfigs")
	f.StringVar(&n.Endpoint, "endpoint", "", "Kubernetes API URL in issued kubeconfigs (default this node)")
	f.BoolVar(&n.Maintenance, "maintenance", false, "start unconfigured, as Talos before apply-config (else configured and bootstrapped)")
	f.StringVar(&n.StateDir, "state-dir", "", "folder keeping the applied config and bootstrap across restarts")
	f.StringVar(&caDir, "ca-dir", "", "folder with the TLS files (talos-ca.crt, talos.crt, talos.key, kube-*.crt/key)")
	f.StringVar(&talosCA, "talos-ca", "", "PEM CA verifying Talos API clients")
	f.StringVar(&talosCAKey, "talos-ca-key", "", "PEM Talos CA key (lets the node issue its own server certificate)")
	f.StringVar(&talosCert, "talos-cert", "", "PEM Talos API server certificate")
	f.StringVar(&talosKey, "talos-key", "", "PEM Talos API server key")
	f.StringVar(&kubeCA, "kube-ca", "", "PEM CA verifying Kubernetes API clients")
	f.StringVar(&kubeCAKey, "kube-ca-key", "", "PEM Kubernetes CA key (lets the node issue kubeconfigs)")
	f.StringVar(&kubeCert, "kube-cert", "", "PEM Kubernetes API server certificate")
	f.StringVar(&kubeKey, "kube-key", "", "PEM Kubernetes API server key")
	return cmd
}

func optAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(s)
}

func parseIngressPorts(s string) (httpPort, httpsPort int, err error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return 0, 0, fmt.Errorf("%q is not two ports", s)
	}
	var ports [2]int
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 || v > 65535 {
			return 0, 0, fmt.Errorf("%q is not a port", p)
		}
		ports[i] = v
	}
	return ports[0], ports[1], nil
}

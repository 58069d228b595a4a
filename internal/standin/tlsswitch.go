package standin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
)

// adopt takes an applied machine config (called with mu held): without
// TLS material given at start, the node issues its Talos API certificate
// from machine.ca and, on control planes, its Kubernetes API certificate
// from cluster.ca, as Talos does once configured. The caller then calls
// setTLS. Nothing changes when it fails.
func (n *Node) adopt(ac *appliedConfig) error {
	c := n.Certs
	ips := n.ips()
	needCert := false
	switch {
	case n.explicitTalos:
	case len(ac.machineCA) > 0 && len(ac.machineCAKey) == 0 && n.role() == RoleWorker:
		// A worker holds machine.ca's certificate only: it keeps its
		// current certificate until trustd signs one (startFetch), and
		// verifies clients against machine.ca from now on.
		c.TalosCA = ac.machineCA
		needCert = true
	default:
		if len(ac.machineCA) == 0 || len(ac.machineCAKey) == 0 {
			return errors.New("the machine configuration has no machine.ca certificate and key to issue the Talos API certificate from")
		}
		names, extra := splitSANs(ac.talosSANs)
		cert, key, err := IssueCerts(ac.machineCA, ac.machineCAKey, append([]string{n.Name, "localhost"}, names...), append(ips, extra...))
		if err != nil {
			return fmt.Errorf("issuing the Talos API certificate from machine.ca: %w", err)
		}
		c.TalosCA, c.TalosCAKey, c.TalosCert, c.TalosKey = ac.machineCA, ac.machineCAKey, cert, key
	}
	if n.role() == RoleControlPlane && !n.explicitKube {
		if len(ac.clusterCA) == 0 || len(ac.clusterCAKey) == 0 {
			return errors.New("the control plane's machine configuration has no cluster.ca certificate and key to issue the Kubernetes API certificate from")
		}
		names, extra := splitSANs(ac.kubeSANs)
		base := []string{n.Name, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
		cert, key, err := IssueCerts(ac.clusterCA, ac.clusterCAKey, append(base, names...), append(ips, extra...))
		if err != nil {
			return fmt.Errorf("issuing the Kubernetes API certificate from cluster.ca: %w", err)
		}
		c.KubeCA, c.KubeCAKey, c.KubeCert, c.KubeKey = ac.clusterCA, ac.clusterCAKey, cert, key
	}
	n.Certs = c
	n.applied = ac
	n.certGen++
	n.needCert = needCert
	return nil
}

// ips are the addresses the node's certificates are valid for.
func (n *Node) ips() []netip.Addr {
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	if n.AdminAddr.IsValid() {
		ips = append(ips, n.AdminAddr)
	}
	return append(ips, n.CertIPs...)
}

// splitSANs separates IP addresses from DNS names.
func splitSANs(sans []string) (names []string, ips []netip.Addr) {
	for _, s := range sans {
		if a, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, a)
		} else if s != "" {
			names = append(names, s)
		}
	}
	return names, ips
}

// setTLS builds the servers' TLS from Certs (called with mu held). The
// listeners read it per handshake (dynamicTLS), so a configuration
// switches the certificates without restarting anything.
func (n *Node) setTLS() error {
	c := n.Certs
	t, err := serverTLS(c.TalosCert, c.TalosKey, c.TalosCA, tls.VerifyClientCertIfGiven)
	if err != nil {
		return fmt.Errorf("talos API: %w", err)
	}
	t.NextProtos = []string{"h2"}
	if n.role() != RoleControlPlane {
		n.talosTLS.Store(t)
		return nil
	}
	k, err := serverTLS(c.KubeCert, c.KubeKey, c.KubeCA, tls.VerifyClientCertIfGiven)
	if err != nil {
		return fmt.Errorf("kubernetes API: %w", err)
	}
	k.NextProtos = []string{"h2", "http/1.1"}
	n.talosTLS.Store(t)
	n.kubeTLS.Store(k)
	return nil
}

// dynamicTLS is a server TLS config that serves, per handshake, the
// config current at that moment.
func dynamicTLS(cur func() *tls.Config) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return cur(), nil
		},
	}
}

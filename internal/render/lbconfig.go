package render

import (
	"fmt"
	"net/netip"

	"github.com/goccy/go-yaml"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/lb"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// LBConfig builds the load balancer's config from the spec: each frontend
// listens on the LB's wan address and sends to a backend of the same name
// holding the selected nodes' addresses on the backend network; the admin
// listener is on the LB's apps address.
func LBConfig(lab *spec.Lab) (*lb.Config, error) {
	l := &lab.LoadBalancer
	var m spec.Machine
	for _, x := range lab.Machines() {
		if x.Role == spec.MachineLB {
			m = x
		}
	}
	wan, ok := m.Address(spec.RoleWAN)
	if !ok || !wan.IsValid() {
		return nil, fmt.Errorf("loadBalancer: no wan address")
	}
	cfg := &lb.Config{
		Version: 1,
		Limits: lb.Limits{
			MaxConnections:       l.MaxConnections,
			PerSourceConnections: l.PerSourceLimit,
			PerSourceRate:        float64(l.PerSourceRate),
		},
	}
	if apps, ok := m.Address(spec.RoleApps); ok && apps.IsValid() && l.AdminPort != 0 {
		cfg.Admin.Listen = netip.AddrPortFrom(apps, uint16(l.AdminPort)).String()
	}
	for _, fe := range l.Frontends {
		cfg.Frontends = append(cfg.Frontends, lb.Frontend{
			Name:     fe.Name,
			Listen:   []string{netip.AddrPortFrom(wan, uint16(fe.Port)).String()},
			Protocol: fe.Protocol,
			Allow:    fe.Allow,
			Deny:     fe.Deny,
			Backend:  fe.Name,
		})
		_, addrs, err := firewall.Backends(lab, fe)
		if err != nil {
			return nil, err
		}
		be := lb.Backend{Name: fe.Name, Balance: fe.Balance, ProxyProtocol: fe.ProxyProtocol}
		for _, a := range addrs {
			be.Servers = append(be.Servers, lb.Server{Address: netip.AddrPortFrom(a, uint16(fe.Backends.Port)).String()})
		}
		if hc := fe.HealthCheck; hc != nil {
			be.HealthCheck = &lb.HealthCheck{
				Type: hc.Type, Path: hc.Path, ExpectStatus: hc.ExpectStatus,
				Interval: lb.Duration(hc.Interval), Timeout: lb.Duration(hc.Timeout),
				Rise: hc.Rise, Fall: hc.Fall,
			}
		}
		cfg.Backends = append(cfg.Backends, be)
	}
	return cfg, nil
}

func renderLB(lab *spec.Lab, _ *secrets.Bundle) ([]Artifact, error) {
	cfg, err := LBConfig(lab)
	if err != nil {
		return nil, err
	}
	data, err := yaml.MarshalWithOptions(cfg, yaml.Indent(2), yaml.IndentSequence(true))
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	text := header(lab, "load balancer config") + "# Read by homelab lb run inside the load balancer container.\n" + string(data)
	return []Artifact{{Path: "lb/lb.yaml", Data: []byte(text)}}, nil
}

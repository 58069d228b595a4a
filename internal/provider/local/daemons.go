package local

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

// procDef is a daemon the lab runs: its spec for the supervisor and the
// config files apply writes before starting it (under config/<name>).
type procDef struct {
	spec  procSpec
	files map[string]render.Artifact // file name in the config folder -> artifact
}

// artifact finds a rendered artifact by path.
func artifact(arts []render.Artifact, path string) (render.Artifact, bool) {
	for _, a := range arts {
		if a.Path == path {
			return a, true
		}
	}
	return render.Artifact{}, false
}

// ClientPeer picks the VPN peer the vpn-client namespace plays: the first
// spec peer whose key homelab generated (a complete client config exists).
// ok is false when no peer has a complete config.
func ClientPeer(lab *spec.Lab, arts []render.Artifact) (name string, ok bool) {
	for _, p := range lab.VPN.Peers {
		if p.PublicKey != "" {
			continue
		}
		if _, found := artifact(arts, "wireguard/peers/"+p.Name+".conf"); found {
			return p.Name, true
		}
	}
	return "", false
}

// ingressPorts are a worker stand-in's HTTP and HTTPS ports: the backend
// ports of the frontends that send to workers (the first two distinct).
func ingressPorts(lab *spec.Lab) (httpPort, httpsPort int) {
	httpPort, httpsPort = 30080, 30443
	for _, fe := range lab.LoadBalancer.Frontends {
		if fe.Backends.Role != string(spec.MachineWorker) || fe.Protocol == "udp" {
			continue
		}
		switch {
		case fe.Port == 443 || strings.Contains(fe.Name, "https"):
			httpsPort = fe.Backends.Port
		case fe.Port == 80 || strings.Contains(fe.Name, "http"):
			httpPort = fe.Backends.Port
		}
	}
	return httpPort, httpsPort
}

// daemons lists the lab's daemons with their argv and config files.
func (p *Provider) daemons(lab *spec.Lab, topo *Topology, arts []render.Artifact) ([]procDef, error) {
	exe := p.exe
	var out []procDef
	add := func(d procDef) {
		d.spec.Argv = append([]string{exe}, d.spec.Argv...)
		out = append(out, d)
	}
	for _, g := range topo.Guests {
		m := g.Machine
		switch m.Role {
		case spec.MachineLB:
			a, ok := artifact(arts, "lb/lb.yaml")
			if !ok {
				return nil, fmt.Errorf("the rendered artifacts have no lb/lb.yaml")
			}
			cfg := filepath.Join(p.l.config(g.NS), "lb.yaml")
			var tcp, udp []uint16
			for _, fe := range lab.LoadBalancer.Frontends {
				if fe.Protocol == "udp" {
					udp = append(udp, uint16(fe.Port))
				} else {
					tcp = append(tcp, uint16(fe.Port))
				}
			}
			if lab.LoadBalancer.AdminPort != 0 {
				tcp = append(tcp, uint16(lab.LoadBalancer.AdminPort))
			}
			add(procDef{files: map[string]render.Artifact{"lb.yaml": a},
				spec: procSpec{Name: g.NS, NS: g.NS, Argv: []string{"lb", "run", "--config", cfg}, TCP: tcp, UDP: udp}})
		case spec.MachineVPN:
			a, ok := artifact(arts, "wireguard/server.conf")
			if !ok {
				return nil, fmt.Errorf("the rendered artifacts have no wireguard/server.conf")
			}
			cfg := filepath.Join(p.l.config(g.NS), "server.conf")
			add(procDef{files: map[string]render.Artifact{"server.conf": a},
				spec: procSpec{Name: g.NS, NS: g.NS, Argv: []string{"vpn", "run", "--config", cfg},
					UDP: []uint16{uint16(lab.VPN.ListenPort)}, Links: []string{firewall.TunnelInterface}}})
		case spec.MachineControlPlane, spec.MachineWorker:
			role := "controlplane"
			if m.Role == spec.MachineWorker {
				role = "worker"
			}
			// In maintenance mode until homelab apply's cluster phase
			// gives it its machine config, as a fresh Talos VM is; its
			// state folder keeps the config across restarts.
			argv := []string{"standin", "--role", role, "--name", m.Name,
				"--cluster-name", lab.Cluster.Name, "--state-dir", p.l.config(g.NS), "--maintenance"}
			if lab.Cluster.TalosVersion != "" {
				argv = append(argv, "--talos-version", lab.Cluster.TalosVersion)
			}
			if lab.Cluster.KubernetesVersion != "" {
				argv = append(argv, "--kubernetes-version", lab.Cluster.KubernetesVersion)
			}
			tcp := []uint16{50000}
			if a, ok := m.Address(spec.RoleAdmin); ok {
				argv = append(argv, "--listen-admin", a.String())
			}
			if m.Role == spec.MachineControlPlane {
				tcp = append(tcp, 6443)
			} else {
				hp, sp := ingressPorts(lab)
				argv = append(argv, "--ingress-ports", strconv.Itoa(hp)+","+strconv.Itoa(sp))
				if a, ok := m.Address(spec.RoleApps); ok {
					argv = append(argv, "--listen-apps", a.String())
				}
				tcp = append(tcp, uint16(hp), uint16(sp))
			}
			add(procDef{spec: procSpec{Name: g.NS, NS: g.NS, Argv: argv, TCP: tcp}})
		case spec.MachineManager:
			d, ok, err := p.gitServer(lab, g, arts)
			if err != nil {
				return nil, err
			}
			if ok {
				add(d)
			}
		}
	}
	if peer, ok := ClientPeer(lab, arts); ok {
		a, _ := artifact(arts, "wireguard/peers/"+peer+".conf")
		cfg := filepath.Join(p.l.config(topo.ClientNS), "client.conf")
		add(procDef{files: map[string]render.Artifact{"client.conf": a},
			spec: procSpec{Name: topo.ClientNS, NS: topo.ClientNS, Argv: []string{"vpn", "run", "--config", cfg}, Links: []string{firewall.TunnelInterface}}})
	}
	for i := range out {
		files := map[string][]byte{}
		for k, a := range out[i].files {
			files[k] = a.Data
		}
		out[i].spec.Hash = specHash(out[i].spec.Argv[1:], files)
	}
	return out, nil
}

// gitServer is the manager's stand-in: the lab's Git repository served
// over SSH on port 22 of its admin address by "homelab gitserver run",
// as the manager VM serves it with sshd and git-shell. ok is false when
// the repository lives elsewhere (gitops.repository: render made no
// git/manager/* files). The repository is kept in the daemon's config
// folder, so it goes with the lab, like the host key.
func (p *Provider) gitServer(lab *spec.Lab, g Guest, arts []render.Artifact) (procDef, bool, error) {
	hostKey, okKey := artifact(arts, "git/manager/ssh_host_ed25519_key")
	auth, okAuth := artifact(arts, "git/manager/authorized_keys")
	if !okKey && !okAuth {
		return procDef{}, false, nil
	}
	if !okKey || !okAuth {
		return procDef{}, false, fmt.Errorf("the rendered artifacts have only one of git/manager/ssh_host_ed25519_key and git/manager/authorized_keys")
	}
	a, ok := g.Machine.Address(spec.RoleAdmin)
	if !ok {
		return procDef{}, false, fmt.Errorf("%s has no admin address for its git server", g.Machine.Name)
	}
	dir := p.l.config(g.NS)
	argv := []string{"gitserver", "run",
		"--dir", filepath.Join(dir, "git"),
		"--listen", net.JoinHostPort(a.String(), "22"),
		"--host-key", filepath.Join(dir, "ssh_host_ed25519_key"),
		"--authorized", filepath.Join(dir, "authorized_keys"),
		"--repo", lab.Name}
	return procDef{
		files: map[string]render.Artifact{"ssh_host_ed25519_key": hostKey, "authorized_keys": auth},
		spec:  procSpec{Name: g.NS, NS: g.NS, Argv: argv, TCP: []uint16{22}},
	}, true, nil
}

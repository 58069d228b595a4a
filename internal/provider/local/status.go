package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/spec"
)

// BackendHealth is one backend server as the load balancer reports it.
type BackendHealth struct {
	Backend string // the backend (frontend) name
	Address string
	State   string // up, down, ejected, disabled, draining
}

// LBHealth reads the load balancer's /status from its admin listener on
// the apps network, connecting from the host namespace (the host's apps
// bridge address is on the apps network, which the LB's ruleset lets in).
func (p *Provider) LBHealth(ctx context.Context) ([]BackendHealth, error) {
	t := p.Topology()
	g, ok := t.Guest(spec.MachineLB, 0)
	if !ok {
		return nil, fmt.Errorf("the lab has no load balancer")
	}
	addr, ok := g.Machine.Address(spec.RoleApps)
	if !ok || p.lab.LoadBalancer.AdminPort == 0 {
		return nil, fmt.Errorf("the load balancer has no admin listener on apps")
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return ns.Dial(ctx, t.HostNS, network, a)
		},
	}}
	url := "http://" + netip.AddrPortFrom(addr, uint16(p.lab.LoadBalancer.AdminPort)).String() + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the load balancer status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading the load balancer status: %s", resp.Status)
	}
	var st struct {
		Backends []struct {
			Name    string `json:"name"`
			Servers []struct {
				Address string `json:"address"`
				State   string `json:"state"`
			} `json:"servers"`
		} `json:"backends"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading the load balancer status: %w", err)
	}
	var out []BackendHealth
	for _, b := range st.Backends {
		for _, s := range b.Servers {
			out = append(out, BackendHealth{Backend: b.Name, Address: s.Address, State: s.State})
		}
	}
	return out, nil
}

// DaemonStatus is one supervised daemon.
type DaemonStatus struct {
	Name     string // its namespace
	Role     string
	PID      int // 0 when down
	Restarts int
	Since    time.Time
}

// Daemons reports the lab's daemons as the supervisor runs them.
func (p *Provider) Daemons() ([]DaemonStatus, error) {
	specs, err := p.l.readSpecs()
	if err != nil {
		return nil, err
	}
	var out []DaemonStatus
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		sp := specs[name]
		ds := DaemonStatus{Name: name}
		ds.Role = p.daemonRole(name)
		if st, ok := p.procState(sp); ok {
			ds.PID, ds.Restarts, ds.Since = st.PID, st.Restarts, st.Started
		}
		out = append(out, ds)
	}
	return out, nil
}

// daemonRole says what the daemon in a namespace is.
func (p *Provider) daemonRole(name string) string {
	t := p.Topology()
	if name == t.ClientNS {
		return "wireguard client"
	}
	for _, g := range t.Guests {
		if g.NS == name {
			return guestKind(g.Machine)
		}
	}
	return ""
}

func guestKind(m spec.Machine) string {
	switch m.Role {
	case spec.MachineControlPlane:
		return "talos control plane (stand-in)"
	case spec.MachineWorker:
		return "talos worker (stand-in)"
	case spec.MachineLB:
		return "load balancer"
	case spec.MachineVPN:
		return "wireguard vpn"
	case spec.MachineManager:
		return "manager (git server stand-in when it hosts the repository)"
	}
	return string(m.Role)
}

// Status prints each namespace of the lab with its addresses and daemon,
// then the load balancer's view of its backends.
func (p *Provider) Status(ctx context.Context, w io.Writer) error {
	t := p.Topology()
	daemons, err := p.Daemons()
	if err != nil {
		return err
	}
	byName := map[string]DaemonStatus{}
	for _, d := range daemons {
		byName[d.Name] = d
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tWHAT\tADDRESSES\tDAEMON\tPID\tRESTARTS")
	row := func(name, what string, addrs []string) {
		state := "absent"
		if ns.Exists(name) {
			state = "-"
		}
		pid, restarts := "-", "-"
		if d, ok := byName[name]; ok {
			state = "down"
			if d.PID > 0 {
				state, pid = "up", strconv.Itoa(d.PID)
			}
			restarts = strconv.Itoa(d.Restarts)
		} else if !ns.Exists(name) {
			what += " (missing)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, what, strings.Join(addrs, " "), state, pid, restarts)
	}
	var hostAddrs []string
	for _, b := range t.Bridges {
		if b.Addr.IsValid() {
			hostAddrs = append(hostAddrs, b.Name+"="+b.Addr.String())
		}
	}
	row(t.HostNS, "host (bridges, firewall, nat)", hostAddrs)
	row(t.InternetNS, "internet (home router)", []string{"wan=" + t.InternetAddr.String(), "client=" + t.UplinkInternet.String()})
	row(t.ClientNS, "vpn client (a peer's device)", []string{"uplink=" + t.UplinkClient.String()})
	for _, g := range t.Guests {
		var addrs []string
		for _, l := range g.Links {
			addrs = append(addrs, l.Inside+"="+l.Addr.String())
		}
		row(g.NS, guestKind(g.Machine), addrs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nThe Talos nodes are stand-ins (homelab standin): they serve a node's ports, they are not Talos.")
	if _, ok := byName[t.Lab+"-lb"]; ok {
		health, err := p.LBHealth(ctx)
		if err != nil {
			fmt.Fprintf(w, "\nload balancer backends: unknown (%v)\n", err)
			return nil
		}
		fmt.Fprintln(w, "\nload balancer backends:")
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, h := range health {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", h.Backend, h.Address, h.State)
		}
		return tw.Flush()
	}
	return nil
}

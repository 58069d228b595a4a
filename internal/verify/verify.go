// Package verify checks a running local lab against the security policy of
// the design with real packets: from each vantage point (the Internet, a
// VPN peer's device, the manager, a cluster node, the load balancer) it
// connects to each service (TCP connect, HTTP through the load balancer,
// TCP through the WireGuard tunnel, UDP) and compares what got through
// with what the policy allows. The expectations are written from the
// policy table, not derived from the firewall rules, so a wrong rule shows
// up as a mismatch.
package verify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/standin"
)

// Kind is how a probe tests a service.
type Kind string

// The probe kinds.
const (
	KindTCP    Kind = "tcp"    // a TCP connect
	KindHTTP   Kind = "http"   // an HTTP GET through the load balancer
	KindTunnel Kind = "tunnel" // a TCP connect through the WireGuard tunnel
	KindUDP    Kind = "udp"    // a datagram and its echo
)

// Zone is where a vantage point sits in the policy table.
type Zone string

// The zones of the policy (rows of DESIGN.md's table).
const (
	ZoneInternet Zone = "internet"
	ZoneVPN      Zone = "vpn peer"
	ZoneManager  Zone = "manager"
	ZoneNode     Zone = "cluster node"
	ZoneLB       Zone = "load balancer"
)

// Class is what kind of service a target is (columns of the table).
type Class string

// The service classes.
const (
	ClassFrontend Class = "lb frontend (wan)"
	ClassAdmin    Class = "admin (net1)"
	ClassIngress  Class = "worker ingress (net2)"
	ClassLBAdmin  Class = "lb admin (net2)"
	ClassEgress   Class = "internet egress"
)

// Vantage is where probes start.
type Vantage struct {
	Name string
	Zone Zone
	NS   string
	// Source is the vantage's address as a service should see it.
	Source netip.Addr
}

// Service is a probe target.
type Service struct {
	Name   string
	Class  Class
	Kind   Kind
	Target netip.AddrPort
	// Owner is the namespace that serves it (a vantage does not probe itself).
	Owner string
	// ProbeListener is set when verify itself listens for the probe
	// (nothing in the local lab serves that port).
	ProbeListener bool
}

// Probe is one vantage-to-service check.
type Probe struct {
	From, To string
	Kind     Kind
	Target   netip.AddrPort
	// Expect is what the policy says; Got is what the packets said.
	Expect, Got bool
	// Why cites the policy.
	Why string
	// Detail says what happened (who answered, the error).
	Detail string
	// Problem is set when the service was reached but wrongly (a
	// backend that did not see the client's address, egress not NATed).
	Problem string
	// wantSeen is the source address the service must see, when it says.
	wantSeen netip.Addr
}

// OK reports whether the probe agrees with the policy.
func (p Probe) OK() bool { return p.Expect == p.Got && p.Problem == "" }

// Report is the whole matrix.
type Report struct {
	Lab      string
	Vantages []Vantage
	Services []Service
	Probes   []Probe
	Took     time.Duration
}

// Mismatches lists the probes that disagree with the policy.
func (r *Report) Mismatches() []Probe {
	var out []Probe
	for _, p := range r.Probes {
		if !p.OK() {
			out = append(out, p)
		}
	}
	return out
}

// MismatchError is returned by Run when any probe disagrees with the
// policy; the report is complete all the same.
type MismatchError struct {
	Mismatches []Probe
	Total      int
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("verifying the lab: %d of %d probes disagree with the security policy", len(e.Mismatches), e.Total)
}

// Hint tells the user what to do about it.
func (e *MismatchError) Hint() string {
	return "the matrix above shows which flows; run homelab apply to restore the lab's rulesets, then verify again"
}

// Options tune Run.
type Options struct {
	// Timeout of one attempt (default 700ms). A flow the policy allows
	// is tried again for twice that (6 s through the WireGuard tunnel), one
	// it denies once.
	Timeout time.Duration
	// Topology overrides the layout computed from the lab.
	Topology *local.Topology
}

// Plan lists the vantages, services and expected probes for the lab
// without sending anything.
func Plan(lab *spec.Lab, topo *local.Topology) (*Report, error) {
	if topo == nil {
		var err error
		if topo, err = local.TopologyOf(lab); err != nil {
			return nil, err
		}
	}
	r := &Report{Lab: lab.Name}
	guest := func(role spec.MachineRole, i int) *local.Guest {
		g, _ := topo.Guest(role, i)
		return g
	}
	addr := func(g *local.Guest, role spec.Role) netip.Addr {
		if g == nil {
			return netip.Addr{}
		}
		a, _ := g.Machine.Address(role)
		return a
	}
	lb, vpn, mgr, cp, w1, w2 := guest(spec.MachineLB, 0), guest(spec.MachineVPN, 0), guest(spec.MachineManager, 0),
		guest(spec.MachineControlPlane, 0), guest(spec.MachineWorker, 0), guest(spec.MachineWorker, 1)
	if lb == nil || vpn == nil || mgr == nil || cp == nil || w1 == nil {
		return nil, errors.New("verifying the lab: it needs a load balancer, a vpn, a manager, a control plane and a worker")
	}

	r.Vantages = []Vantage{{Name: "internet", Zone: ZoneInternet, NS: topo.InternetNS, Source: topo.InternetAddr.Addr()}}
	if hasClientPeer(lab) {
		r.Vantages = append(r.Vantages, Vantage{Name: "vpn-client", Zone: ZoneVPN, NS: topo.ClientNS, Source: topo.UplinkClient.Addr()})
	}
	r.Vantages = append(r.Vantages,
		Vantage{Name: "manager", Zone: ZoneManager, NS: mgr.NS, Source: addr(mgr, spec.RoleAdmin)},
		Vantage{Name: shortName(lab, w1.NS), Zone: ZoneNode, NS: w1.NS, Source: addr(w1, spec.RoleAdmin)},
		Vantage{Name: "lb", Zone: ZoneLB, NS: lb.NS, Source: addr(lb, spec.RoleApps)},
	)

	hp, sp := 30080, 30443
	for _, fe := range lab.LoadBalancer.Frontends {
		if fe.Protocol == "udp" {
			continue
		}
		kind := KindTCP
		if fe.Port == 80 || fe.Name == "http" {
			kind = KindHTTP
		}
		if fe.Backends.Role == string(spec.MachineWorker) {
			if kind == KindHTTP {
				hp = fe.Backends.Port
			} else if fe.Port == 443 {
				sp = fe.Backends.Port
			}
		}
		r.Services = append(r.Services, Service{Name: "lb " + fe.Name, Class: ClassFrontend, Kind: kind,
			Target: netip.AddrPortFrom(addr(lb, spec.RoleWAN), uint16(fe.Port)), Owner: lb.NS})
	}
	cpAdmin := addr(cp, spec.RoleAdmin)
	r.Services = append(r.Services,
		Service{Name: "k8s api (cp)", Class: ClassAdmin, Kind: KindTCP, Target: netip.AddrPortFrom(cpAdmin, 6443), Owner: cp.NS},
		Service{Name: "talos api (cp)", Class: ClassAdmin, Kind: KindTCP, Target: netip.AddrPortFrom(cpAdmin, 50000), Owner: cp.NS},
		Service{Name: "talos api (worker)", Class: ClassAdmin, Kind: KindTCP, Target: netip.AddrPortFrom(addr(w1, spec.RoleAdmin), 50000), Owner: w1.NS},
		Service{Name: "ssh (manager)", Class: ClassAdmin, Kind: KindTCP, Target: netip.AddrPortFrom(addr(mgr, spec.RoleAdmin), 22), Owner: mgr.NS, ProbeListener: true},
	)
	ingress := w1
	if w2 != nil {
		ingress = w2 // from worker-1, probe the other worker's ingress
	}
	r.Services = append(r.Services,
		Service{Name: "ingress http (" + shortName(lab, ingress.NS) + ")", Class: ClassIngress, Kind: KindTCP,
			Target: netip.AddrPortFrom(addr(ingress, spec.RoleApps), uint16(hp)), Owner: ingress.NS},
		Service{Name: "ingress https (" + shortName(lab, ingress.NS) + ")", Class: ClassIngress, Kind: KindTCP,
			Target: netip.AddrPortFrom(addr(ingress, spec.RoleApps), uint16(sp)), Owner: ingress.NS},
	)
	if lab.LoadBalancer.AdminPort != 0 {
		r.Services = append(r.Services, Service{Name: "lb admin", Class: ClassLBAdmin, Kind: KindTCP,
			Target: netip.AddrPortFrom(addr(lb, spec.RoleApps), uint16(lab.LoadBalancer.AdminPort)), Owner: lb.NS})
	}
	inet := topo.InternetAddr.Addr()
	r.Services = append(r.Services,
		Service{Name: "internet tcp", Class: ClassEgress, Kind: KindTCP, Target: netip.AddrPortFrom(inet, EgressTCPPort), Owner: topo.InternetNS, ProbeListener: true},
		Service{Name: "internet udp", Class: ClassEgress, Kind: KindUDP, Target: netip.AddrPortFrom(inet, EgressUDPPort), Owner: topo.InternetNS, ProbeListener: true},
	)

	for _, v := range r.Vantages {
		for _, s := range r.Services {
			if s.Owner == v.NS {
				continue
			}
			want, why, ok := Expect(v.Zone, s.Class)
			if !ok {
				continue
			}
			kind := s.Kind
			if v.Zone == ZoneVPN && s.Class == ClassAdmin {
				kind = KindTunnel
			}
			pr := Probe{From: v.Name, To: s.Name, Kind: kind, Target: s.Target, Expect: want, Why: why}
			switch {
			case s.Class == ClassEgress && s.Kind == KindTCP:
				pr.wantSeen = topo.HostWAN.Addr() // masqueraded by the host
			case s.Kind == KindHTTP && (v.Zone == ZoneInternet || v.Zone == ZoneVPN):
				pr.wantSeen = v.Source // PROXY protocol carries the client's address
			}
			r.Probes = append(r.Probes, pr)
		}
	}
	return r, nil
}

// The ports of verify's own listeners in the internet namespace.
const (
	EgressTCPPort = 18080
	EgressUDPPort = 18053
)

func hasClientPeer(lab *spec.Lab) bool {
	for _, p := range lab.VPN.Peers {
		if p.PublicKey == "" {
			return true
		}
	}
	return false
}

func shortName(lab *spec.Lab, nsName string) string { return strings.TrimPrefix(nsName, lab.Name+"-") }

// Expect is the security policy of DESIGN.md: whether a vantage in zone
// may reach a service of class, and the policy's words for it. ok is false
// for pairs the policy has nothing to say about (a VPN peer's Internet
// egress goes around the split tunnel; the Internet's own egress).
func Expect(zone Zone, class Class) (allowed bool, why string, ok bool) {
	switch class {
	case ClassFrontend:
		switch zone {
		case ZoneLB:
			return false, "", false
		}
		return true, "LB frontends face the Internet (nodes and manager reach them through NAT)", true
	case ClassAdmin:
		switch zone {
		case ZoneVPN:
			return true, "VPN peers reach net1's admin ports", true
		case ZoneManager, ZoneNode:
			return true, "within net1", true
		case ZoneInternet:
			return false, "net1 is never reachable from the Internet", true
		case ZoneLB:
			return false, "the LB has no access to net1", true
		}
	case ClassIngress:
		switch zone {
		case ZoneLB:
			return true, "the LB reaches the workers' ingress ports", true
		case ZoneNode:
			return true, "workers expose ingress on net2", true
		case ZoneInternet:
			return false, "net2 is never reachable from the Internet", true
		case ZoneVPN:
			return false, "VPN peers do not reach net2", true
		case ZoneManager:
			return false, "admin and apps are not routed to each other", true
		}
	case ClassLBAdmin:
		switch zone {
		case ZoneNode:
			return true, "the LB's admin listener is open to net2", true
		case ZoneInternet:
			return false, "the LB's admin listener is on net2 only", true
		case ZoneVPN:
			return false, "VPN peers do not reach net2", true
		case ZoneManager:
			return false, "admin and apps are not routed to each other", true
		}
	case ClassEgress:
		switch zone {
		case ZoneManager, ZoneNode:
			return true, "nodes and manager have Internet egress (NAT on the host)", true
		case ZoneLB:
			return false, "the LB has no egress", true
		}
	}
	return false, "", false
}

// Run sends every probe of Plan and fills in what happened. It returns
// the report and a *MismatchError when any probe disagrees with the policy.
func Run(ctx context.Context, lab *spec.Lab, opts Options) (*Report, error) {
	start := time.Now()
	r, err := Plan(lab, opts.Topology)
	if err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 700 * time.Millisecond
	}
	vantages := map[string]Vantage{}
	for _, v := range r.Vantages {
		if !ns.Exists(v.NS) {
			return r, fmt.Errorf("verifying the lab: namespace %s does not exist; is the lab applied?", v.NS)
		}
		vantages[v.Name] = v
	}
	stop, err := startListeners(r.Services)
	if err != nil {
		return r, err
	}
	defer stop()

	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range r.Probes {
		wg.Add(1)
		go func(p *Probe) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// A flow the policy allows gets a few tries; through the
			// tunnel, long enough to cover a WireGuard handshake retry
			// (5 s after a lost initiation).
			budget := time.Duration(0)
			if p.Expect {
				budget = 2 * opts.Timeout
				if p.Kind == KindTunnel {
					budget = 6 * time.Second
				}
			}
			for end := time.Now().Add(budget); ; {
				run(ctx, vantages[p.From], p, opts.Timeout)
				if p.Got || ctx.Err() != nil || time.Now().After(end) {
					break
				}
			}
		}(&r.Probes[i])
	}
	wg.Wait()
	r.Took = time.Since(start)
	if m := r.Mismatches(); len(m) > 0 {
		return r, &MismatchError{Mismatches: m, Total: len(r.Probes)}
	}
	return r, ctx.Err()
}

// run sends one probe from the vantage and records the outcome.
func run(ctx context.Context, v Vantage, p *Probe, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p.Got, p.Detail, p.Problem = false, "", ""
	switch p.Kind {
	case KindTCP, KindTunnel:
		c, err := ns.Dial(ctx, v.NS, "tcp", p.Target.String())
		if err != nil {
			p.Detail = shortErr(err)
			return
		}
		defer c.Close()
		p.Got, p.Detail = true, "connected"
		if p.Target.Port() == EgressTCPPort {
			_ = c.SetReadDeadline(time.Now().Add(timeout))
			line, _ := bufio.NewReader(c).ReadString('\n')
			seen := strings.TrimSpace(strings.TrimPrefix(line, "you are "))
			p.Detail = "connected, seen as " + seen
			if host, _, _ := net.SplitHostPort(seen); p.wantSeen.IsValid() && host != p.wantSeen.String() {
				p.Problem = fmt.Sprintf("seen as %s, want %s (the host's NAT)", host, p.wantSeen)
			}
		}
	case KindHTTP:
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return ns.Dial(ctx, v.NS, network, addr)
			},
		}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Target.String()+"/", nil)
		resp, err := client.Do(req)
		if err != nil {
			p.Detail = shortErr(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			p.Detail = "HTTP " + resp.Status
			return
		}
		p.Got = true
		node := resp.Header.Get("X-Homelab-Standin")
		client4 := field(string(body), "client=")
		p.Detail = fmt.Sprintf("answered by %s, which saw client %s", node, client4)
		if !strings.Contains(string(body), standin.Marker) {
			p.Problem = "the answer does not come from a worker stand-in"
		} else if host, _, _ := net.SplitHostPort(client4); p.wantSeen.IsValid() && host != p.wantSeen.String() {
			p.Problem = fmt.Sprintf("the backend saw %s, not the client's address %s", host, p.wantSeen)
		}
	case KindUDP:
		var pc net.PacketConn
		err := ns.Do(v.NS, func() error {
			var err error
			pc, err = net.ListenPacket("udp4", ":0")
			return err
		})
		if err != nil {
			p.Detail = shortErr(err)
			return
		}
		defer pc.Close()
		to := net.UDPAddrFromAddrPort(p.Target)
		if _, err := pc.WriteTo([]byte("homelab verify\n"), to); err != nil {
			p.Detail = shortErr(err)
			return
		}
		_ = pc.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 512)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			p.Detail = "no answer"
			return
		}
		p.Got, p.Detail = true, "echo, "+strings.TrimSpace(string(buf[:n]))
	}
}

func field(body, key string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func shortErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline exceeded"):
		return "timed out (filtered)"
	case strings.Contains(s, "refused"):
		return "refused"
	case strings.Contains(s, "not permitted"):
		return "blocked on output"
	case strings.Contains(s, "unreachable"):
		return "unreachable"
	}
	return s
}

// startListeners opens verify's own listeners for services the lab may not
// serve (the manager's SSH, served by its Git server only when the lab's
// repository lives there; the Internet's echo): a TCP listener that tells
// each client its address, and a UDP echo. A port already in use is served
// by someone else and left alone.
func startListeners(svcs []Service) (stop func(), err error) {
	var closers []io.Closer
	stop = func() {
		for _, c := range closers {
			c.Close()
		}
	}
	for _, s := range svcs {
		if !s.ProbeListener {
			continue
		}
		switch s.Kind {
		case KindTCP:
			ln, err := ns.Listen(s.Owner, "tcp4", s.Target.String())
			if isInUse(err) {
				continue
			}
			if err != nil {
				stop()
				return nil, fmt.Errorf("verifying the lab: listening for %s in %s: %w", s.Name, s.Owner, err)
			}
			closers = append(closers, ln)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "you are %s\n", c.RemoteAddr())
					c.Close()
				}
			}()
		case KindUDP:
			pc, err := ns.ListenPacket(s.Owner, "udp4", s.Target.String())
			if isInUse(err) {
				continue
			}
			if err != nil {
				stop()
				return nil, fmt.Errorf("verifying the lab: listening for %s in %s: %w", s.Name, s.Owner, err)
			}
			closers = append(closers, pc)
			go func() {
				buf := make([]byte, 512)
				for {
					_, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo([]byte("seen as "+from.String()+"\n"), from)
				}
			}()
		}
	}
	return stop, nil
}

func isInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// Print writes the matrix: one row per service, one column per vantage.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "reachability of lab %s (local provider; the Talos nodes are stand-ins)\n", r.Lab)
	fmt.Fprintln(w, "  yes/no: as the policy says   YES!/NO!: differs from the policy   -: not probed")
	fmt.Fprintln(w)
	cell := map[[2]string]Probe{}
	for _, p := range r.Probes {
		cell[[2]string{p.To, p.From}] = p
	}
	width := 0
	for _, s := range r.Services {
		if n := len(s.Name) + len(s.Target.String()) + 1; n > width {
			width = n
		}
	}
	fmt.Fprintf(w, "%-*s", width+2, "to \\ from")
	for _, v := range r.Vantages {
		fmt.Fprintf(w, "  %-10s", v.Name)
	}
	fmt.Fprintln(w)
	for _, s := range r.Services {
		fmt.Fprintf(w, "%-*s", width+2, s.Name+" "+s.Target.String())
		for _, v := range r.Vantages {
			p, ok := cell[[2]string{s.Name, v.Name}]
			c := "-"
			if ok {
				c = map[bool]string{true: "yes", false: "no"}[p.Got]
				if !p.OK() {
					c = strings.ToUpper(c) + "!"
				}
			}
			fmt.Fprintf(w, "  %-10s", c)
		}
		fmt.Fprintln(w)
	}
	mm := r.Mismatches()
	fmt.Fprintf(w, "\n%d probes in %s: %d as the policy says, %d differ\n", len(r.Probes), r.Took.Round(time.Millisecond), len(r.Probes)-len(mm), len(mm))
	slices.SortFunc(mm, func(a, b Probe) int { return strings.Compare(a.From+a.To, b.From+b.To) })
	for _, p := range mm {
		want := map[bool]string{true: "allowed", false: "denied"}[p.Expect]
		got := map[bool]string{true: "got through", false: "did not get through"}[p.Got]
		fmt.Fprintf(w, "  %s -> %s (%s %s): policy says %s (%s); it %s: %s", p.From, p.To, p.Kind, p.Target, want, p.Why, got, p.Detail)
		if p.Problem != "" {
			fmt.Fprintf(w, "; %s", p.Problem)
		}
		fmt.Fprintln(w)
	}
}

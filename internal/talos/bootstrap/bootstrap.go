package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/client"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos"
)

// TalosPort is the Talos API port (apid, and maintenance mode's server).
const TalosPort = 50000

// Files the flow writes to the state folder (encrypted, see secrets.Store).
const (
	FileKubeconfig  = "kubeconfig"
	FileTalosconfig = "talosconfig"
)

// Defaults of the Flow's bounds.
const (
	DefaultNodeTimeout   = 10 * time.Minute
	DefaultHealthTimeout = 10 * time.Minute
	DefaultPollInterval  = 2 * time.Second
	DefaultCallTimeout   = 15 * time.Second
)

// Dialer opens TCP connections to the admin network: the in-process
// WireGuard tunnel or a direct dialer (package tunnel).
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Store keeps files encrypted; *secrets.Store is one.
type Store interface {
	PutFile(name string, data []byte) error
	GetFile(name string) ([]byte, error)
}

var _ Store = (*secrets.Store)(nil)

// Node is one Talos node to bring up.
type Node struct {
	Name         string
	ControlPlane bool
	// Addr is the host:port of its Talos API on the admin network.
	Addr string
	// Config is its machine config. It holds the cluster's keys: never
	// log it.
	Config []byte
}

// Flow is one bootstrap run. Fill the fields and call Run.
type Flow struct {
	// Nodes in lab order; the first control plane is where etcd is
	// bootstrapped.
	Nodes []Node
	// Dialer reaches the admin network; nil dials directly.
	Dialer Dialer
	// TalosCA is the Talos API CA (PEM); AdminCert and AdminKey the
	// talosconfig's admin client certificate (PEM).
	TalosCA, AdminCert, AdminKey []byte
	// Talosconfig is stored beside the kubeconfig (optional).
	Talosconfig []byte
	// Store receives kubeconfig and talosconfig, encrypted.
	Store Store
	// NodeTimeout bounds the wait for each node's Talos API (and for a
	// node to come back configured); HealthTimeout the wait for health.
	NodeTimeout, HealthTimeout time.Duration
	// PollInterval is the pause between attempts; CallTimeout bounds one
	// API call.
	PollInterval, CallTimeout time.Duration
	// DrainTimeout bounds the eviction of one node's pods (RemoveNodes).
	DrainTimeout time.Duration
	// Progress receives one line per step (never secrets); nil is quiet.
	Progress func(format string, args ...any)
	// SkipHealth skips the health wait (the report is then empty).
	SkipHealth bool
}

// Result says what a run did.
type Result struct {
	// Applied lists the nodes that got their config in this run;
	// Configured those that already had one.
	Applied, Configured []string
	// Bootstrapped is true when this run called Bootstrap; otherwise
	// etcd was found bootstrapped already.
	Bootstrapped bool
	// BootstrapNode is the control plane etcd was bootstrapped on.
	BootstrapNode string
	// Standin is true when the nodes are homelab stand-ins, not Talos.
	Standin bool
	// Health is the last health report.
	Health *Report
}

// NodesFromLab pairs the lab's Talos nodes with their rendered configs
// (talos.MachineConfigs), addressed on the admin network.
func NodesFromLab(lab *spec.Lab, configs []talos.NodeConfig) ([]Node, error) {
	var out []Node
	for _, nc := range configs {
		m := nc.Machine
		a, ok := m.Address(spec.RoleAdmin)
		if !ok || !a.IsValid() {
			return nil, fmt.Errorf("node %s has no address on the admin network", m.Name)
		}
		out = append(out, Node{
			Name:         m.Name,
			ControlPlane: m.Role == spec.MachineControlPlane,
			Addr:         netip.AddrPortFrom(a, TalosPort).String(),
			Config:       nc.Data,
		})
	}
	if len(out) == 0 {
		return nil, errors.New("the lab has no Talos nodes")
	}
	return out, nil
}

// NodeError is a node that did not get where the flow needed it.
type NodeError struct {
	Node, Addr string
	Err        error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("node %s (talos API %s): %v", e.Node, e.Addr, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

// Hint tells the user what to look at.
func (e *NodeError) Hint() string {
	return fmt.Sprintf("check that %s is running and that %s is reachable from here (through the VPN unless you are on the admin network); `homelab status` lists the guests", e.Node, e.Addr)
}

func (f *Flow) progress(format string, args ...any) {
	if f.Progress != nil {
		f.Progress(format, args...)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (f *Flow) check() error {
	if len(f.Nodes) == 0 {
		return errors.New("no nodes to bootstrap")
	}
	if f.Store == nil {
		return errors.New("no state folder to store the kubeconfig in")
	}
	if len(f.TalosCA) == 0 || len(f.AdminCert) == 0 || len(f.AdminKey) == 0 {
		return errors.New("no talos CA or admin certificate (the lab's secrets bundle is incomplete)")
	}
	if _, err := tls.X509KeyPair(f.AdminCert, f.AdminKey); err != nil {
		return errors.New("the talos admin certificate and key do not form a pair")
	}
	if f.bootstrapNode() == nil {
		return errors.New("no control plane among the nodes")
	}
	return nil
}

func (f *Flow) bootstrapNode() *Node {
	for i := range f.Nodes {
		if f.Nodes[i].ControlPlane {
			return &f.Nodes[i]
		}
	}
	return nil
}

// Run brings the cluster up and returns what it did. It is safe to run
// again: configured nodes are left alone and etcd is not bootstrapped a
// second time.
func (f *Flow) Run(ctx context.Context) (*Result, error) {
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("bootstrapping talos: %w", err)
	}
	res := &Result{}

	// 1. Each node's API, in parallel; apply configs in maintenance.
	type nodeOut struct {
		applied, standin bool
		err              error
	}
	outs := make([]nodeOut, len(f.Nodes))
	var wg sync.WaitGroup
	for i := range f.Nodes {
		wg.Go(func() {
			o := &outs[i]
			o.applied, o.standin, o.err = f.bringUp(ctx, &f.Nodes[i])
		})
	}
	wg.Wait()
	var errs []error
	for i, o := range outs {
		n := f.Nodes[i]
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		if o.applied {
			res.Applied = append(res.Applied, n.Name)
		} else {
			res.Configured = append(res.Configured, n.Name)
		}
		res.Standin = res.Standin || o.standin
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("bootstrapping talos: %w", errors.Join(errs...))
	}

	// 2. etcd, once.
	bn := f.bootstrapNode()
	res.BootstrapNode = bn.Name
	called, err := f.bootstrapEtcd(ctx, bn)
	if err != nil {
		return res, fmt.Errorf("bootstrapping talos: %w", err)
	}
	res.Bootstrapped = called

	// 3. kubeconfig and talosconfig into the state folder.
	kc, err := f.fetchKubeconfig(ctx, bn)
	if err != nil {
		return res, fmt.Errorf("bootstrapping talos: %w", err)
	}
	if err := f.Store.PutFile(FileKubeconfig, kc); err != nil {
		return res, fmt.Errorf("bootstrapping talos: storing the kubeconfig: %w", err)
	}
	if len(f.Talosconfig) > 0 {
		if err := f.Store.PutFile(FileTalosconfig, f.Talosconfig); err != nil {
			return res, fmt.Errorf("bootstrapping talos: storing the talosconfig: %w", err)
		}
	}
	f.progress("kubeconfig and talosconfig stored encrypted in the state folder")

	// 4. health.
	if f.SkipHealth {
		return res, nil
	}
	rep, err := f.WaitHealthy(ctx, kc, res.Standin)
	res.Health = rep
	if err != nil {
		return res, fmt.Errorf("bootstrapping talos: %w", err)
	}
	return res, nil
}

// tlsSecure is the talosconfig's TLS: the Talos CA and the admin cert.
func (f *Flow) tlsSecure() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.TalosCA)
	kp, _ := tls.X509KeyPair(f.AdminCert, f.AdminKey) // checked in check
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
}

// tlsMaintenance is how talosctl --insecure talks to a node in
// maintenance mode: its certificate is self-signed and unknown yet, and
// no client certificate is sent. Only the machine config goes over it.
func tlsMaintenance() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // maintenance mode, as talosctl --insecure
}

func (f *Flow) connect(ctx context.Context, n *Node, cfg *tls.Config) (*client.Client, error) {
	var d Dialer = &net.Dialer{}
	if f.Dialer != nil {
		d = f.Dialer
	}
	return client.New(ctx,
		client.WithEndpoints(n.Addr),
		client.WithTLSConfig(cfg),
		client.WithGRPCDialOptions(grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		})),
	)
}

// nodeState is what one probe of a node found.
type nodeState int

const (
	stateDown        nodeState = iota
	stateMaintenance           // needs its machine config
	stateConfigured            // apid with the lab's certificates, kubelet registered
)

// probe asks a node for its version and services, first as the admin of
// the lab, then as a maintenance-mode client. It returns the node's
// state and whether it says it is a homelab stand-in.
func (f *Flow) probe(ctx context.Context, n *Node) (nodeState, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return stateDown, false, err
	}
	defer c.Close()
	v, err := c.Version(cctx)
	if err == nil {
		standin := isStandin(v)
		sl, err := c.ServiceList(cctx)
		if err != nil {
			return stateDown, standin, fmt.Errorf("listing services: %w", err)
		}
		if hasService(sl, "kubelet") {
			return stateConfigured, standin, nil
		}
		// Answering with the lab's certificates but running no kubelet:
		// a stand-in given the lab's certificates at start, in
		// maintenance mode (a real Talos node in maintenance mode, and a
		// stand-in started without certificates, has no certificate of
		// the lab yet and is reached below, insecurely).
		return stateMaintenance, standin, nil
	}
	secureErr := err
	ic, err := f.connect(cctx, n, tlsMaintenance())
	if err != nil {
		return stateDown, false, err
	}
	defer ic.Close()
	v, err = ic.Version(cctx)
	if err != nil {
		return stateDown, false, shortErr(secureErr)
	}
	return stateMaintenance, isStandin(v), nil
}

// bringUp waits for a node's API and configures it if it is in
// maintenance mode, then waits for it to come back configured.
func (f *Flow) bringUp(ctx context.Context, n *Node) (applied, standin bool, err error) {
	timeout := orDefault(f.NodeTimeout, DefaultNodeTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(what string, err error) error {
		return &NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("%s: %w", what, err)}
	}

	st, standin, err := f.waitState(wctx, n, stateMaintenance)
	if err != nil {
		return false, standin, fail(fmt.Sprintf("no answer from its talos API within %s", timeout), err)
	}
	if st == stateConfigured {
		f.progress("%s: already configured", n.Name)
		return false, standin, nil
	}
	if len(n.Config) == 0 {
		return false, standin, fail("applying its machine config", errors.New("the node is in maintenance mode and no config was rendered for it"))
	}
	if err := f.apply(wctx, n); err != nil {
		return false, standin, fail("applying its machine config", err)
	}
	f.progress("%s: machine config applied", n.Name)
	if _, _, err := f.waitState(wctx, n, stateConfigured); err != nil {
		return true, standin, fail(fmt.Sprintf("not back with its configuration within %s", timeout), err)
	}
	f.progress("%s: configured", n.Name)
	return true, standin, nil
}

// waitState polls until the node reaches at least want, or ctx ends.
func (f *Flow) waitState(ctx context.Context, n *Node, want nodeState) (nodeState, bool, error) {
	var last error
	for {
		st, standin, err := f.probe(ctx, n)
		if err == nil && st >= want {
			return st, standin, nil
		}
		switch {
		case err != nil && cutByDeadline(ctx) && last != nil:
			// cut by the deadline: keep the error that says why
		case err != nil:
			last = err
		default:
			last = errors.New("still in maintenance mode")
		}
		select {
		case <-ctx.Done():
			return stateDown, standin, last
		case <-time.After(orDefault(f.PollInterval, DefaultPollInterval)):
		}
	}
}

func (f *Flow) apply(ctx context.Context, n *Node) error {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	// A node in maintenance mode talks only to unauthenticated clients
	// before it has a config; the stand-ins accept either.
	c, err := f.connect(cctx, n, tlsMaintenance())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.ApplyConfiguration(cctx, &machine.ApplyConfigurationRequest{
		Data: n.Config,
		Mode: machine.ApplyConfigurationRequest_AUTO,
	})
	return shortErr(err)
}

// bootstrapEtcd bootstraps etcd on n unless it is bootstrapped already.
// It reports whether it called Bootstrap.
func (f *Flow) bootstrapEtcd(ctx context.Context, n *Node) (bool, error) {
	timeout := orDefault(f.NodeTimeout, DefaultNodeTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		called, done, err := f.bootstrapOnce(wctx, n)
		if done {
			return called, err
		}
		last = err
		select {
		case <-wctx.Done():
			return false, &NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("bootstrapping etcd: not possible within %s: %w", timeout, last)}
		case <-time.After(orDefault(f.PollInterval, DefaultPollInterval)):
		}
	}
}

// bootstrapOnce is one attempt; done says whether to stop trying.
func (f *Flow) bootstrapOnce(ctx context.Context, n *Node) (called, done bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return false, false, err
	}
	defer c.Close()
	sl, err := c.ServiceList(cctx)
	if err != nil {
		return false, false, fmt.Errorf("listing services: %w", shortErr(err))
	}
	if hasService(sl, "etcd") {
		f.progress("%s: etcd already bootstrapped", n.Name)
		return false, true, nil
	}
	err = c.Bootstrap(cctx, &machine.BootstrapRequest{})
	switch status.Code(err) {
	case codes.OK:
		f.progress("%s: etcd bootstrapped", n.Name)
		return true, true, nil
	case codes.AlreadyExists:
		// etcd holds data already: bootstrapped by an earlier run.
		f.progress("%s: etcd already bootstrapped", n.Name)
		return false, true, nil
	case codes.FailedPrecondition, codes.Unavailable, codes.DeadlineExceeded:
		// Not ready yet (Talos answers FailedPrecondition while it
		// waits for its services): try again.
		return false, false, shortErr(err)
	default:
		return false, true, &NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("bootstrapping etcd: %w", shortErr(err))}
	}
}

func (f *Flow) fetchKubeconfig(ctx context.Context, n *Node) ([]byte, error) {
	timeout := orDefault(f.NodeTimeout, DefaultNodeTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		kc, err := f.kubeconfigOnce(wctx, n)
		if err == nil {
			return kc, nil
		}
		last = err
		select {
		case <-wctx.Done():
			return nil, &NodeError{Node: n.Name, Addr: n.Addr, Err: fmt.Errorf("fetching the kubeconfig: none within %s: %w", timeout, last)}
		case <-time.After(orDefault(f.PollInterval, DefaultPollInterval)):
		}
	}
}

func (f *Flow) kubeconfigOnce(ctx context.Context, n *Node) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, orDefault(f.CallTimeout, DefaultCallTimeout))
	defer cancel()
	c, err := f.connect(cctx, n, f.tlsSecure())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	kc, err := c.Kubeconfig(cctx)
	if err != nil {
		return nil, shortErr(err)
	}
	if _, err := ParseKubeconfig(kc); err != nil {
		return nil, err
	}
	return kc, nil
}

func hasService(sl *machine.ServiceListResponse, id string) bool {
	for _, m := range sl.GetMessages() {
		if slices.ContainsFunc(m.GetServices(), func(s *machine.ServiceInfo) bool { return s.GetId() == id }) {
			return true
		}
	}
	return false
}

// isStandin reports whether a node says it is a homelab stand-in (its
// version tag ends with -homelab-standin).
func isStandin(v *machine.VersionResponse) bool {
	for _, m := range v.GetMessages() {
		if strings.HasSuffix(m.GetVersion().GetTag(), "-homelab-standin") {
			return true
		}
	}
	return false
}

// shortErr keeps a gRPC error's message without its "rpc error: code =
// ... desc =" wrapping; other errors pass unchanged.
func shortErr(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return fmt.Errorf("%s (%s)", s.Message(), s.Code())
	}
	return err
}

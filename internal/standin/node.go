package standin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Role is what kind of Talos node a stand-in plays.
type Role string

// The two Talos node roles.
const (
	RoleControlPlane Role = "controlplane"
	RoleWorker       Role = "worker"
)

// Default ports, as on a Talos node and its ingress controller.
const (
	DefaultTalosPort = 50000
	DefaultKubePort  = 6443
	DefaultHTTPPort  = 30080
	DefaultHTTPSPort = 30443
)

// Defaults of the versions a stand-in reports.
const (
	DefaultTalosVersion      = "v1.13.9"
	DefaultKubernetesVersion = "v1.36.3"
)

// Marker is the text every stand-in output carries.
const Marker = "homelab stand-in"

// Service names one of the ports a node serves (see Node.Addr).
type Service string

// The services of a stand-in.
const (
	ServiceTalos Service = "talos"
	ServiceKube  Service = "kube"
	ServiceHTTP  Service = "http"
	ServiceHTTPS Service = "https"
)

// Node is a stand-in for a Talos node. The zero value with Name set serves
// a worker on all addresses with ephemeral certificates; set the fields
// before Run and do not change them afterwards.
type Node struct {
	// Name is the node's hostname.
	Name string
	// Role is controlplane or worker (default worker).
	Role Role
	// AdminAddr is where the Talos API (and on control planes the
	// Kubernetes API) listen; zero means all addresses.
	AdminAddr netip.Addr
	// AppsAddr is where a worker's ingress ports listen; zero means all.
	AppsAddr netip.Addr
	// CertIPs are more addresses the certificates the node issues itself
	// are valid for: where clients reach it when it listens elsewhere
	// (tests forwarding a lab's addresses to loopback).
	CertIPs []netip.Addr
	// Ports; zero means the Default* port. With EphemeralPorts every
	// listener takes a free port instead (tests; see Addr).
	TalosPort, KubePort, HTTPPort, HTTPSPort int
	EphemeralPorts                           bool
	// TalosVersion and KubernetesVersion are reported by the APIs.
	TalosVersion, KubernetesVersion string
	// ClusterName and Endpoint go into the kubeconfig the node hands out
	// (defaults "homelab" and https://AdminAddr:KubePort).
	ClusterName, Endpoint string
	// Certs is the TLS material; see Certs for what empty fields mean.
	Certs Certs
	// Maintenance starts the node as Talos starts before it has a config:
	// the Talos API accepts clients without certificates, waits for
	// ApplyConfiguration, and then for Bootstrap (control planes), and
	// the Kubernetes API is not ready until then. Without it the node acts
	// as configured and bootstrapped already.
	Maintenance bool
	// StateDir, when set, keeps the applied machine config and the
	// bootstrap flag across restarts, as a Talos node's STATE partition.
	StateDir string
	// Logger receives the node's log; nil discards it.
	Logger *slog.Logger
	// RebootDelay is how long the node answers Unavailable after an
	// Upgrade (or an apply in reboot mode), as a rebooting node does.
	RebootDelay time.Duration
	// TrustdPort is a control plane's trustd port (default
	// DefaultTrustdPort; free with EphemeralPorts). TrustdEndpoints are
	// where a worker asks for its certificate (host:port; default the
	// control-plane endpoint's host at DefaultTrustdPort).
	TrustdPort      int
	TrustdEndpoints []string
	// FailUpgrades makes the node come back unhealthy (kubelet failing)
	// from every upgrade: of Talos, or a configuration changing its
	// Kubernetes version. Tests of a rollout that must stop use it.
	FailUpgrades bool

	mu      sync.Mutex
	state   nodeState
	config  []byte
	applied *appliedConfig
	events  []Event
	down    time.Time // rebooting until then
	// backAt is when the node comes back from its last upgrade or
	// reboot, until its healthy event is recorded (see settle).
	backAt    time.Time
	kubeNodes map[string]*kubeNode
	kubePods  []*kubePod
	listeners map[Service]net.Listener
	// explicit TLS material (Certs given at start) is kept; otherwise
	// the node serves ephemeral certificates until configured and then
	// certificates issued from the applied config's CAs.
	explicitTalos, explicitKube bool
	talosTLS, kubeTLS           atomic.Pointer[tls.Config]
	grpc                        *grpc.Server
	trustd                      *grpc.Server
	// certGen counts adopted configs; needCert says the Talos API
	// certificate must come from trustd (a worker without machine.ca's
	// key).
	certGen  uint64
	needCert bool
	https    []*http.Server
	closed   bool
	done     chan struct{}
}

// nodeState is what StateDir keeps (the config itself in its own file).
type nodeState struct {
	Configured   bool `json:"configured"`
	Bootstrapped bool `json:"bootstrapped"`
	// TalosVersion is the version installed: TalosVersion's when first
	// configured, then an upgrade's (the installer image's tag). Image
	// is the installer image of the last upgrade.
	TalosVersion string `json:"talosVersion,omitempty"`
	Image        string `json:"image,omitempty"`
	// Installed is the installer image the node's system came from: the
	// config's machine.install.image when first configured, then each
	// upgrade's. Its Image Factory schematic says which extensions the
	// node runs.
	Installed string `json:"installed,omitempty"`
	// Unhealthy is set when the node came back from an upgrade failing
	// (FailUpgrades).
	Unhealthy bool `json:"unhealthy,omitempty"`
	// KubeNodes are a control plane's Node objects, by name, true when
	// cordoned (what etcd would keep).
	KubeNodes map[string]bool `json:"kubeNodes,omitempty"`
}

// Event is one thing that happened to a stand-in, for tests and logs.
type Event struct {
	Time time.Time
	// Kind is configured, bootstrapped, certified (a worker's
	// certificate from trustd), upgraded (Talos), kubernetes (a
	// configuration with another Kubernetes version) or healthy (back
	// from an upgrade or a reboot with its services healthy; its Time
	// is when the reboot ended, not when someone looked).
	Kind string
	// Detail is the version or image (never a secret).
	Detail string
}

// The kinds of Event.
const (
	EventConfigured   = "configured"
	EventBootstrapped = "bootstrapped"
	EventUpgraded     = "upgraded"
	EventKubernetes   = "kubernetes"
	EventCertified    = "certified"
	EventHealthy      = "healthy"
)

// Events returns what happened to the node since it started, in order.
func (n *Node) Events() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.settle()
	return slices.Clone(n.events)
}

// comeBack notes that the node is back at t from an upgrade or a reboot
// (called with mu held).
func (n *Node) comeBack(t time.Time) {
	n.settle()
	n.backAt = t
}

// settle records the healthy event of a node back from an upgrade or a
// reboot once that time has passed, stamped with it; a node told to
// fail upgrades comes back unhealthy and gets none. It runs before the
// node answers anything (called with mu held), so the event precedes
// every later one.
func (n *Node) settle() {
	if n.backAt.IsZero() || time.Now().Before(n.backAt) {
		return
	}
	if !n.state.Unhealthy {
		n.events = append(n.events, Event{Time: n.backAt, Kind: EventHealthy, Detail: "talos " + n.talosVersion() + ", kubernetes " + n.kubeVersion() + ", services healthy"})
		n.log().Info(Marker+" "+EventHealthy, "detail", "back, services healthy")
	}
	n.backAt = time.Time{}
}

// UpgradeImage is the installer image of the node's last Talos upgrade
// ("" when it was never upgraded).
func (n *Node) UpgradeImage() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.Image
}

// InstalledImage is the installer image the node's system came from:
// machine.install.image of its first configuration, then the last
// upgrade's image ("" before any configuration).
func (n *Node) InstalledImage() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.Installed
}

// ConfiguredInstallImage is machine.install.image of the applied machine
// config ("" before any).
func (n *Node) ConfiguredInstallImage() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.applied == nil {
		return ""
	}
	return n.applied.installImage
}

// event records and logs an event (called with mu held).
func (n *Node) event(kind, detail string) {
	n.settle()
	n.events = append(n.events, Event{Time: time.Now(), Kind: kind, Detail: detail})
	n.log().Info(Marker+" "+kind, "detail", detail)
}

func (n *Node) log() *slog.Logger {
	if n.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return n.Logger.With("standin", n.Name)
}

func (n *Node) role() Role {
	if n.Role == "" {
		return RoleWorker
	}
	return n.Role
}

// talosVersion is the version reported: the last upgrade's, else
// TalosVersion (called with mu held).
func (n *Node) talosVersion() string {
	switch {
	case n.state.TalosVersion != "":
		return n.state.TalosVersion
	case n.TalosVersion == "":
		return DefaultTalosVersion
	}
	return n.TalosVersion
}

// kubeVersion is the kubelet's version: the applied config's kubelet
// image tag, else KubernetesVersion (called with mu held).
func (n *Node) kubeVersion() string {
	if n.applied != nil {
		if v := imageTag(n.applied.kubeletImage); v != "" {
			return v
		}
	}
	if n.KubernetesVersion == "" {
		return DefaultKubernetesVersion
	}
	return n.KubernetesVersion
}

// apiServerVersion is what the Kubernetes API reports: the applied
// config's kube-apiserver image tag, else kubeVersion (mu held).
func (n *Node) apiServerVersion() string {
	if n.applied != nil {
		if v := imageTag(n.applied.apiServerImage); v != "" {
			return v
		}
	}
	return n.kubeVersion()
}

func (n *Node) port(p, def int) int {
	switch {
	case n.EphemeralPorts:
		return 0
	case p == 0:
		return def
	}
	return p
}

func hostPort(a netip.Addr, port int) string {
	host := ""
	if a.IsValid() {
		host = a.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// Addr is the address a service listens on, once Listen or Run has
// bound it; ok is false for a service this node does not serve.
func (n *Node) Addr(s Service) (addr netip.AddrPort, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, ok := n.listeners[s]
	if !ok {
		return netip.AddrPort{}, false
	}
	return l.Addr().(*net.TCPAddr).AddrPort(), true
}

// Listen loads the node's state and binds its ports. Run calls it when it
// has not been called.
func (n *Node) Listen() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners != nil {
		return nil
	}
	if n.closed {
		return errors.New("stand-in node is closed")
	}
	if n.role() != RoleControlPlane && n.role() != RoleWorker {
		return fmt.Errorf("starting stand-in %s: unknown role %q (want controlplane or worker)", n.Name, n.Role)
	}
	c := &n.Certs
	n.explicitTalos = len(c.TalosCA)+len(c.TalosCAKey)+len(c.TalosCert)+len(c.TalosKey) > 0
	n.explicitKube = len(c.KubeCA)+len(c.KubeCAKey)+len(c.KubeCert)+len(c.KubeKey) > 0
	if err := n.fillCerts(); err != nil {
		return fmt.Errorf("starting stand-in %s: %w", n.Name, err)
	}
	if err := n.loadState(); err != nil {
		return fmt.Errorf("starting stand-in %s: %w", n.Name, err)
	}
	if len(n.config) > 0 {
		ac, err := parseMachineConfig(n.config)
		if err == nil {
			err = n.adopt(ac)
		}
		if err != nil {
			return fmt.Errorf("starting stand-in %s: stored machine config: %w", n.Name, err)
		}
	}
	if err := n.setTLS(); err != nil {
		return fmt.Errorf("starting stand-in %s: %w", n.Name, err)
	}
	if n.role() == RoleControlPlane && n.state.Bootstrapped {
		for name, cordoned := range n.state.KubeNodes {
			n.registerKubeNode(name, n.kubeVersion())
			n.kubeNodes[name].unschedulable = cordoned
		}
		n.registerKubeNode(n.Name, n.kubeVersion())
	}
	want := map[Service]string{ServiceTalos: hostPort(n.AdminAddr, n.port(n.TalosPort, DefaultTalosPort))}
	if n.role() == RoleControlPlane {
		want[ServiceKube] = hostPort(n.AdminAddr, n.port(n.KubePort, DefaultKubePort))
		want[ServiceTrustd] = hostPort(n.AdminAddr, n.port(n.TrustdPort, DefaultTrustdPort))
	} else {
		want[ServiceHTTP] = hostPort(n.AppsAddr, n.port(n.HTTPPort, DefaultHTTPPort))
		want[ServiceHTTPS] = hostPort(n.AppsAddr, n.port(n.HTTPSPort, DefaultHTTPSPort))
	}
	ls := map[Service]net.Listener{}
	for s, addr := range want {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return fmt.Errorf("starting stand-in %s: %s API: %w", n.Name, s, err)
		}
		ls[s] = l
	}
	n.listeners = ls
	n.done = make(chan struct{})
	n.startFetch()
	return nil
}

// startFetch asks trustd for a certificate when the applied config
// needs one (called with mu held, once listening).
func (n *Node) startFetch() {
	if n.needCert && n.done != nil && !n.closed {
		go n.fetchCert(n.certGen, n.applied, n.done)
	}
}

// Run serves until ctx is done or Close is called. It returns nil then,
// or the first error that stopped a listener.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return nil
	}
	if err := n.Listen(); err != nil {
		return err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	errc := make(chan error, len(n.listeners))
	talos, err := n.newTalosServer()
	if err != nil {
		n.mu.Unlock()
		n.Close()
		return fmt.Errorf("starting stand-in %s: %w", n.Name, err)
	}
	n.grpc = talos
	go func(l net.Listener) { errc <- talos.Serve(l) }(n.listeners[ServiceTalos])
	var servers []httpServe
	if n.role() == RoleControlPlane {
		n.trustd = n.newTrustdServer()
		go func(l net.Listener) { errc <- n.trustd.Serve(l) }(n.listeners[ServiceTrustd])
		srv, err := n.newKubeServer()
		if err != nil {
			n.mu.Unlock()
			n.Close()
			return fmt.Errorf("starting stand-in %s: %w", n.Name, err)
		}
		servers = append(servers, httpServe{srv, n.listeners[ServiceKube], true})
	} else {
		httpSrv, httpsSrv, err := n.newIngressServers()
		if err != nil {
			n.mu.Unlock()
			n.Close()
			return fmt.Errorf("starting stand-in %s: %w", n.Name, err)
		}
		servers = append(servers,
			httpServe{httpSrv, proxyListener{n.listeners[ServiceHTTP]}, false},
			httpServe{httpsSrv, proxyListener{n.listeners[ServiceHTTPS]}, true})
	}
	for _, s := range servers {
		n.https = append(n.https, s.srv)
		go func() {
			if s.tls {
				errc <- s.srv.ServeTLS(s.l, "", "")
			} else {
				errc <- s.srv.Serve(s.l)
			}
		}()
	}
	done := n.done
	for s, l := range n.listeners {
		n.log().Info(Marker+" listening", "role", n.role(), "service", s, "addr", l.Addr().String())
	}
	n.mu.Unlock()

	var runErr error
	select {
	case <-ctx.Done():
	case <-done:
	case err := <-errc:
		// gRPC's Serve returns nil once stopped.
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			runErr = fmt.Errorf("stand-in %s stopped serving: %w", n.Name, err)
		}
	}
	n.Close()
	return runErr
}

// httpServe is one HTTP server to start on its listener.
type httpServe struct {
	srv *http.Server
	l   net.Listener
	tls bool
}

// Close stops every listener and server. It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.trustd != nil {
		n.trustd.Stop()
	}
	for _, s := range n.https {
		s.Close()
	}
	for _, l := range n.listeners {
		l.Close()
	}
	if n.done != nil {
		close(n.done)
	}
	return nil
}

// fillCerts completes the node's TLS material (called with mu held): a
// server certificate is issued from the CA and its key when only those
// are given, and from an ephemeral CA when nothing is.
func (n *Node) fillCerts() error {
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	if n.AdminAddr.IsValid() {
		ips = append(ips, n.AdminAddr)
	}
	c := &n.Certs
	if err := fillPair("talos API", &c.TalosCA, &c.TalosCAKey, &c.TalosCert, &c.TalosKey, []string{n.Name, "localhost"}, ips); err != nil {
		return err
	}
	if n.role() != RoleControlPlane {
		return nil
	}
	names := []string{n.Name, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
	return fillPair("kubernetes API", &c.KubeCA, &c.KubeCAKey, &c.KubeCert, &c.KubeKey, names, ips)
}

func fillPair(what string, ca, caKey, cert, key *[]byte, names []string, ips []netip.Addr) error {
	haveCA, haveCAKey, havePair := len(*ca) > 0, len(*caKey) > 0, len(*cert) > 0 && len(*key) > 0
	switch {
	case havePair && !haveCA:
		return fmt.Errorf("%s certificate given without the CA that verifies its clients", what)
	case havePair:
		return nil
	case len(*cert) > 0 || len(*key) > 0:
		return fmt.Errorf("%s certificate given without its key, or the key without its certificate", what)
	case haveCA != haveCAKey:
		return fmt.Errorf("%s CA given without its key or a server certificate", what)
	case !haveCA:
		var err error
		if *ca, *caKey, err = NewCA(Marker + " ephemeral " + what + " CA"); err != nil {
			return err
		}
	}
	var err error
	*cert, *key, err = IssueCerts(*ca, *caKey, names, ips)
	return err
}

const (
	stateFile  = "state.json"
	configFile = "config.yaml"
)

// loadState reads StateDir or starts from Maintenance (called with mu held).
func (n *Node) loadState() error {
	n.state = nodeState{Configured: !n.Maintenance, Bootstrapped: !n.Maintenance && n.role() == RoleControlPlane}
	if n.StateDir == "" {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(n.StateDir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	if err := json.Unmarshal(data, &n.state); err != nil {
		return fmt.Errorf("reading state %s: %w", filepath.Join(n.StateDir, stateFile), err)
	}
	cfg, err := os.ReadFile(filepath.Join(n.StateDir, configFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading state: %w", err)
	}
	n.config = cfg
	return nil
}

// saveState writes StateDir (called with mu held). The machine config
// holds secrets: 0600 in a 0700 folder.
func (n *Node) saveState() error {
	if n.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(n.StateDir, 0o700); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	if n.config != nil {
		if err := writeFile(filepath.Join(n.StateDir, configFile), n.config); err != nil {
			return fmt.Errorf("saving state: %w", err)
		}
	}
	data, _ := json.Marshal(n.state)
	if err := writeFile(filepath.Join(n.StateDir, stateFile), data); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}

func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package vpn

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// DefaultTun is the TUN device name (the name nftables/vpn.nft expects).
const DefaultTun = "wg0"

// DefaultMTU is wg-quick's MTU for an IPv4 underlay.
const DefaultMTU = 1420

// Server is the lab's WireGuard endpoint: wireguard-go on a TUN device,
// configured from the server config that render writes. Set Config, then
// Run; the zero value of the other fields is usable.
type Server struct {
	// Config is the parsed server config (see Parse).
	Config *Config
	// TunName is the TUN device to create (default wg0).
	TunName string
	// UAPISocket, when set, is a unix socket path answering wireguard's
	// UAPI (wg(8) "get" and "set" requests), for status and probes.
	UAPISocket string
	// Logger receives the endpoint's log; nil discards it.
	Logger *slog.Logger

	t tunnel
}

// Run brings the endpoint up in the caller's network namespace and serves
// until ctx is done or Close is called; it removes the device on return.
func (s *Server) Run(ctx context.Context) error {
	if s.Config != nil && s.Config.Interface.ListenPort == 0 {
		return errors.New("starting wireguard server: the config has no ListenPort")
	}
	return s.t.run(ctx, "server", s.Config, s.TunName, s.UAPISocket, s.Logger)
}

// Close stops Run. It is safe to call more than once.
func (s *Server) Close() error { return s.t.close() }

// Peers reports the live state of each peer while Run is serving.
func (s *Server) Peers() ([]PeerStatus, error) { return s.t.peers() }

// Client is a WireGuard peer: the same endpoint as Server, configured from
// a client config whose peers have an Endpoint (host names are resolved
// when Run starts, in the caller's network namespace).
type Client struct {
	Config     *Config
	TunName    string
	UAPISocket string
	Logger     *slog.Logger

	t tunnel
}

// Run brings the client up and serves until ctx is done or Close.
func (c *Client) Run(ctx context.Context) error {
	if c.Config != nil {
		for _, p := range c.Config.Peers {
			if p.Endpoint == "" {
				return fmt.Errorf("starting wireguard client: peer %s has no Endpoint", p.label())
			}
		}
	}
	return c.t.run(ctx, "client", c.Config, c.TunName, c.UAPISocket, c.Logger)
}

// Close stops Run. It is safe to call more than once.
func (c *Client) Close() error { return c.t.close() }

// Peers reports the live state of each peer while Run is serving.
func (c *Client) Peers() ([]PeerStatus, error) { return c.t.peers() }

// IsClient reports whether cfg is a client's config (its peers carry
// endpoints to dial) rather than a server's.
func IsClient(cfg *Config) bool {
	for _, p := range cfg.Peers {
		if p.Endpoint != "" {
			return true
		}
	}
	return false
}

// PeerStatus is a peer's live state, from the UAPI.
type PeerStatus struct {
	PublicKey     Key
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero: never
	RxBytes       uint64
	TxBytes       uint64
}

// tunnel is what Server and Client share.
type tunnel struct {
	mu     sync.Mutex
	dev    *device.Device
	closed bool
	stop   chan struct{}
}

func (t *tunnel) stopCh() chan struct{} {
	if t.stop == nil {
		t.stop = make(chan struct{})
	}
	return t.stop
}

func (t *tunnel) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		close(t.stopCh())
	}
	return nil
}

func (t *tunnel) peers() ([]PeerStatus, error) {
	t.mu.Lock()
	dev := t.dev
	t.mu.Unlock()
	if dev == nil {
		return nil, errors.New("wireguard endpoint is not running")
	}
	var b strings.Builder
	if err := dev.IpcGetOperation(&b); err != nil {
		return nil, fmt.Errorf("reading wireguard state: %w", err)
	}
	return parseStatus(strings.NewReader(b.String()))
}

func (t *tunnel) run(ctx context.Context, kind string, cfg *Config, name, uapiPath string, log *slog.Logger) (err error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg == nil {
		return fmt.Errorf("starting wireguard %s: no config", kind)
	}
	if name == "" {
		name = DefaultTun
	}
	t.mu.Lock()
	stop := t.stopCh()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	if t.dev != nil {
		t.mu.Unlock()
		return fmt.Errorf("starting wireguard %s: already running", kind)
	}
	t.mu.Unlock()

	resolved, err := resolveEndpoints(ctx, cfg)
	if err != nil {
		return fmt.Errorf("starting wireguard %s: %w", kind, err)
	}
	uapi, err := resolved.UAPI()
	if err != nil {
		return fmt.Errorf("starting wireguard %s: %w", kind, err)
	}
	if kernelWireGuard() {
		log.Info("the kernel has a WireGuard module; using userspace wireguard-go all the same")
	} else {
		log.Info("no WireGuard kernel module; using userspace wireguard-go")
	}
	mtu := cfg.Interface.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("starting wireguard %s: creating TUN device %s: %w", kind, name, err)
	}
	if real, err := tdev.Name(); err == nil {
		name = real
	}
	wlog := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf: func(format string, args ...any) {
			log.Warn("wireguard: " + fmt.Sprintf(format, args...))
		},
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), wlog) // owns tdev now
	defer func() {
		dev.Close()
		t.mu.Lock()
		t.dev = nil
		t.mu.Unlock()
	}()
	if err := dev.IpcSet(uapi); err != nil {
		return fmt.Errorf("starting wireguard %s: configuring the device: %w", kind, err)
	}
	if err := dev.Up(); err != nil {
		return fmt.Errorf("starting wireguard %s: %w", kind, err)
	}
	if err := configureLink(name, cfg); err != nil {
		return fmt.Errorf("starting wireguard %s: %w", kind, err)
	}
	if uapiPath != "" {
		l, err := listenUAPI(uapiPath, dev)
		if err != nil {
			return fmt.Errorf("starting wireguard %s: %w", kind, err)
		}
		defer func() {
			l.Close()
			os.Remove(uapiPath)
		}()
	}
	t.mu.Lock()
	t.dev = dev
	t.mu.Unlock()
	log.Info("wireguard "+kind+" up", "tun", name, "listen_port", cfg.Interface.ListenPort, "peers", len(cfg.Peers))

	select {
	case <-ctx.Done():
	case <-stop:
	case <-dev.Wait():
		return fmt.Errorf("wireguard %s stopped: the device closed", kind)
	}
	log.Info("wireguard " + kind + " down")
	return nil
}

// resolveEndpoints returns a copy of cfg whose endpoints are IP:port.
func resolveEndpoints(ctx context.Context, cfg *Config) (*Config, error) {
	c := *cfg
	c.Peers = append([]Peer(nil), cfg.Peers...)
	for i := range c.Peers {
		p := &c.Peers[i]
		if p.Endpoint == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(p.Endpoint); err == nil {
			continue
		}
		host, port, err := splitHostPort(p.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", p.label(), err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil || len(addrs) == 0 {
			return nil, fmt.Errorf("peer %s: resolving endpoint %s: %v", p.label(), host, err)
		}
		p.Endpoint = netip.AddrPortFrom(addrs[0].Unmap(), port).String()
	}
	return &c, nil
}

// kernelWireGuard reports whether the kernel can make WireGuard links, by
// making one and removing it at once.
func kernelWireGuard() bool {
	probe := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "hlwgprobe" + strconv.Itoa(os.Getpid()%100000)}}
	if err := netlink.LinkAdd(probe); err != nil {
		return false
	}
	netlink.LinkDel(probe)
	return true
}

// configureLink gives the TUN device its addresses, brings it up and
// routes each peer's AllowedIPs not already covered by an address's
// subnet through it, as wg-quick does (no default route: a full tunnel
// would need policy routing, which homelab does not do).
func configureLink(name string, cfg *Config) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding link %s: %w", name, err)
	}
	for _, a := range cfg.Interface.Addresses {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("adding address %s to %s: %w", a, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	for _, p := range cfg.Peers {
		for _, dst := range p.AllowedIPs {
			if dst.Bits() == 0 {
				return fmt.Errorf("peer %s: AllowedIPs %s is a full tunnel, which homelab vpn run does not route (use the networks to reach, such as the admin CIDR)", p.label(), dst)
			}
			if covered(dst, cfg.Interface.Addresses) {
				continue
			}
			r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}}
			if err := netlink.RouteReplace(r); err != nil {
				return fmt.Errorf("routing %s through %s: %w", dst, name, err)
			}
		}
	}
	return nil
}

// covered reports whether dst lies inside the subnet of one of addrs
// (which the kernel routes through the link already).
func covered(dst netip.Prefix, addrs []netip.Prefix) bool {
	for _, a := range addrs {
		if a.Bits() <= dst.Bits() && a.Masked().Contains(dst.Addr()) {
			return true
		}
	}
	return false
}

// listenUAPI serves the UAPI on a unix socket (0600).
func listenUAPI(path string, dev *device.Device) (net.Listener, error) {
	os.Remove(path) // a stale socket from a killed run
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on UAPI socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("securing UAPI socket: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	return l, nil
}

// QueryUAPI asks the endpoint serving the UAPI socket at path for its
// peers' state (what "wg show" prints).
func QueryUAPI(path string) ([]PeerStatus, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("querying wireguard: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		return nil, fmt.Errorf("querying wireguard: %w", err)
	}
	return parseStatus(c)
}

// parseStatus reads a UAPI get answer up to its blank line; it skips the
// private key line without keeping it.
func parseStatus(r io.Reader) ([]PeerStatus, error) {
	var (
		out   []PeerStatus
		sec   int64
		nsec  int64
		errno string
	)
	flush := func() {
		if len(out) > 0 && (sec != 0 || nsec != 0) {
			out[len(out)-1].LastHandshake = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, errors.New("reading wireguard state: malformed UAPI line")
		}
		switch k {
		case "public_key":
			flush()
			raw, err := hex.DecodeString(v)
			if err != nil || len(raw) != KeyLen {
				return nil, errors.New("reading wireguard state: malformed public key")
			}
			var p PeerStatus
			copy(p.PublicKey[:], raw)
			out = append(out, p)
		case "endpoint":
			if len(out) > 0 {
				out[len(out)-1].Endpoint, _ = netip.ParseAddrPort(v)
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if len(out) > 0 {
				out[len(out)-1].RxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		case "tx_bytes":
			if len(out) > 0 {
				out[len(out)-1].TxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		case "errno":
			errno = v
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading wireguard state: %w", err)
	}
	if errno != "" && errno != "0" {
		return nil, fmt.Errorf("reading wireguard state: errno %s", errno)
	}
	return out, nil
}

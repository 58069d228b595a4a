package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// Tunnel is a running in-process WireGuard interface with its own network
// stack. Connections dialed through it leave as WireGuard UDP packets from
// an ordinary socket; nothing changes on the host.
type Tunnel struct {
	dev  *device.Device
	net  *netstack.Net
	once sync.Once
}

// Options tune Open; the zero value is fine.
type Options struct {
	// Logger receives wireguard-go's messages at debug level (errors at
	// warn); nil discards them. They never hold keys.
	Logger *slog.Logger
	// Resolver resolves peer endpoints given by name; nil is the default.
	Resolver *net.Resolver
}

// Open brings the tunnel up: it resolves the peers' endpoints, opens the
// UDP socket and configures the device. Close it when done.
func Open(ctx context.Context, cfg *Config, opts Options) (*Tunnel, error) {
	if cfg == nil || cfg.PrivateKey == "" || !validKey(cfg.PrivateKey) {
		return nil, errors.New("opening the wireguard tunnel: the config has no valid private key")
	}
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("opening the wireguard tunnel: the config has no address")
	}
	uapi, err := uapiConfig(ctx, cfg, opts.Resolver)
	if err != nil {
		return nil, fmt.Errorf("opening the wireguard tunnel: %w", err)
	}
	addrs := make([]netip.Addr, len(cfg.Addresses))
	for i, p := range cfg.Addresses {
		addrs[i] = p.Addr()
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	tdev, tnet, err := netstack.CreateNetTUN(addrs, cfg.DNS, mtu)
	if err != nil {
		return nil, fmt.Errorf("opening the wireguard tunnel: creating the user-space network stack: %w", err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), logger(opts.Logger))
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		// IpcSet errors name the failing key, never its value.
		return nil, fmt.Errorf("opening the wireguard tunnel: configuring the device: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("opening the wireguard tunnel: bringing the device up: %w", err)
	}
	return &Tunnel{dev: dev, net: tnet}, nil
}

func logger(l *slog.Logger) *device.Logger {
	if l == nil {
		return &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	}
	return &device.Logger{
		Verbosef: func(format string, args ...any) { l.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { l.Warn(fmt.Sprintf(format, args...)) },
	}
}

// uapiConfig renders the config in wireguard-go's configuration protocol.
func uapiConfig(ctx context.Context, cfg *Config, r *net.Resolver) (string, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", hexKey(cfg.PrivateKey))
	if cfg.ListenPort != 0 {
		fmt.Fprintf(&b, "listen_port=%d\n", cfg.ListenPort)
	}
	b.WriteString("replace_peers=true\n")
	for i, p := range cfg.Peers {
		if !validKey(p.PublicKey) {
			return "", fmt.Errorf("peer #%d has no valid public key", i+1)
		}
		fmt.Fprintf(&b, "public_key=%s\n", hexKey(p.PublicKey))
		if p.PresharedKey != "" {
			if !validKey(p.PresharedKey) {
				return "", fmt.Errorf("peer #%d has an invalid preshared key", i+1)
			}
			fmt.Fprintf(&b, "preshared_key=%s\n", hexKey(p.PresharedKey))
		}
		if p.Endpoint != "" {
			ep, err := resolve(ctx, r, p.Endpoint)
			if err != nil {
				return "", fmt.Errorf("peer #%d endpoint: %w", i+1, err)
			}
			fmt.Fprintf(&b, "endpoint=%s\n", ep)
		}
		if p.PersistentKeepalive != 0 {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
		}
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String(), nil
}

// resolve turns host:port into ip:port, looking the host up if needed.
func resolve(ctx context.Context, r *net.Resolver, hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not host:port", hostport)
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q has a bad port", hostport)
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolving %s: no address", host)
	}
	// Prefer IPv4, as wg-quick's endpoints usually are.
	best := ips[0]
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			best = ip.Unmap()
			break
		}
	}
	return netip.AddrPortFrom(best, uint16(pn)), nil
}

// DialContext dials addr through the tunnel. network is "tcp", "tcp4",
// "tcp6", "udp", "udp4" or "udp6"; a host name in addr is resolved with
// the config's DNS servers through the tunnel.
func (t *Tunnel) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.net.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s through the wireguard tunnel: %w", addr, err)
	}
	return c, nil
}

// ListenTCP listens on the tunnel's side of the VPN, for servers that live
// inside it (tests, the in-process VPN peer of a lab).
func (t *Tunnel) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	l, err := t.net.ListenTCPAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s inside the wireguard tunnel: %w", addr, err)
	}
	return l, nil
}

// ListenPort is the UDP port the tunnel's WireGuard socket is bound to.
func (t *Tunnel) ListenPort() (int, error) {
	s, err := t.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("reading the wireguard device state: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "listen_port="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("reading the wireguard device state: no listen port")
}

// Handshakes reports, per peer public key (base64), whether a handshake
// with it has completed.
func (t *Tunnel) Handshakes() (map[string]bool, error) {
	s, err := t.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("reading the wireguard device state: %w", err)
	}
	out := map[string]bool{}
	var cur string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			cur = hexToBase64(v)
			out[cur] = false
		case "last_handshake_time_sec":
			if v != "0" && cur != "" {
				out[cur] = true
			}
		}
	}
	return out, nil
}

// Close takes the tunnel down and closes its socket; connections through
// it fail afterwards. It is safe to call more than once.
func (t *Tunnel) Close() error {
	t.once.Do(func() { t.dev.Close() })
	return nil
}

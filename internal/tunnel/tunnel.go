package tunnel

import (
	"bufio"
	"context"
	"encoding/hex"
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

	"github.com/homelab-dev/homelab/internal/vpn"
)

// Tunnel is a running in-process WireGuard interface with its own network
// stack. Connections dialed through it leave as WireGuard UDP packets from
// an ordinary socket; nothing changes on the host.
type Tunnel struct {
	dev  *device.Device
	net  *stackTUN
	once sync.Once
}

// Options tune Open; the zero value is fine.
type Options struct {
	// Logger receives wireguard-go's messages at debug level (errors at
	// warn); nil discards them. They never hold keys.
	Logger *slog.Logger
	// Resolver resolves peer endpoints given by name; nil is the default.
	Resolver *net.Resolver
	// Bind sends and receives the WireGuard UDP packets; nil is
	// conn.NewDefaultBind(). wireguard-go (re)opens its sockets from
	// whichever goroutine brings the device up (netstack's up event
	// included), so a caller who needs them in another network
	// namespace passes a Bind whose Open enters it.
	Bind conn.Bind
}

// Open brings the tunnel up from a wg-quick config as vpn.Parse reads it
// (which already refuses wg-quick's hooks: there is no OS interface here):
// it resolves the peers' endpoints, opens the UDP socket and configures
// the device. Close it when done.
func Open(ctx context.Context, cfg *vpn.Config, opts Options) (*Tunnel, error) {
	if cfg == nil || cfg.Interface.PrivateKey.IsZero() {
		return nil, errors.New("opening the wireguard tunnel: the config has no private key")
	}
	// vpn.Parse allows an [Interface] without Address (a server's may be
	// set elsewhere); the in-process stack needs one.
	if len(cfg.Interface.Addresses) == 0 {
		return nil, errors.New("opening the wireguard tunnel: [Interface] has no Address")
	}
	resolved, err := resolveEndpoints(ctx, cfg, opts.Resolver)
	if err != nil {
		return nil, fmt.Errorf("opening the wireguard tunnel: %w", err)
	}
	uapi, err := resolved.UAPI()
	if err != nil {
		return nil, fmt.Errorf("opening the wireguard tunnel: %w", err)
	}
	addrs := make([]netip.Addr, len(cfg.Interface.Addresses))
	for i, p := range cfg.Interface.Addresses {
		addrs[i] = p.Addr()
	}
	mtu := cfg.Interface.MTU
	if mtu == 0 {
		mtu = vpn.DefaultMTU
	}
	tdev, err := newStackTUN(addrs, cfg.Interface.DNS, mtu)
	if err != nil {
		return nil, fmt.Errorf("opening the wireguard tunnel: creating the user-space network stack: %w", err)
	}
	bind := opts.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	dev := device.NewDevice(tdev, bind, logger(opts.Logger)) // closes tdev on Close
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		// IpcSet errors name the failing key, never its value.
		return nil, fmt.Errorf("opening the wireguard tunnel: configuring the device: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("opening the wireguard tunnel: bringing the device up: %w", err)
	}
	return &Tunnel{dev: dev, net: tdev}, nil
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

// resolveEndpoints returns a copy of cfg whose peer endpoints are IP:port,
// as vpn.Config.UAPI wants, looking host names up with r.
func resolveEndpoints(ctx context.Context, cfg *vpn.Config, r *net.Resolver) (*vpn.Config, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	c := *cfg
	c.Peers = append([]vpn.Peer(nil), cfg.Peers...)
	for i := range c.Peers {
		p := &c.Peers[i]
		if p.Endpoint == "" {
			continue
		}
		ep, err := resolve(ctx, r, p.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("peer #%d endpoint: %w", i+1, err)
		}
		p.Endpoint = ep.String()
	}
	return &c, nil
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
	c, err := t.net.dial(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s through the wireguard tunnel: %w", addr, err)
	}
	return c, nil
}

// ListenTCP listens on the tunnel's side of the VPN, for servers that live
// inside it (tests, the in-process VPN peer of a lab).
func (t *Tunnel) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	l, err := t.net.listenTCP(addr)
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

// Handshakes reports, per peer public key, whether a handshake with it
// has completed.
func (t *Tunnel) Handshakes() (map[vpn.Key]bool, error) {
	st, err := t.stats()
	if err != nil {
		return nil, err
	}
	out := make(map[vpn.Key]bool, len(st))
	for k, s := range st {
		out[k] = s.handshake
	}
	return out, nil
}

// Traffic reports the WireGuard bytes sent to and received from every
// peer (handshakes included): a peer that never answered has rx 0.
func (t *Tunnel) Traffic() (tx, rx uint64, err error) {
	st, err := t.stats()
	if err != nil {
		return 0, 0, err
	}
	for _, s := range st {
		tx += s.tx
		rx += s.rx
	}
	return tx, rx, nil
}

// peerStats is what the device reports about one peer.
type peerStats struct {
	handshake bool
	tx, rx    uint64
}

func (t *Tunnel) stats() (map[vpn.Key]*peerStats, error) {
	s, err := t.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("reading the wireguard device state: %w", err)
	}
	out := map[vpn.Key]*peerStats{}
	var cur *peerStats
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			raw, err := hex.DecodeString(v)
			if err != nil || len(raw) != vpn.KeyLen {
				return nil, errors.New("reading the wireguard device state: malformed public key")
			}
			cur = &peerStats{}
			out[vpn.Key(raw)] = cur
		case "last_handshake_time_sec":
			if cur != nil && v != "0" {
				cur.handshake = true
			}
		case "tx_bytes", "rx_bytes":
			if cur == nil {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("reading the wireguard device state: %s is not a number", k)
			}
			if k == "tx_bytes" {
				cur.tx = n
			} else {
				cur.rx = n
			}
		}
	}
	return out, nil
}

// RetryHandshakes starts a new handshake now with every peer that has not
// completed one, instead of at wireguard-go's next retry, which comes 5 s
// (REKEY_TIMEOUT) after the last attempt: when the first initiation was
// lost (the server was not listening yet, a packet dropped), the next one
// leaves at once. Peers with a completed handshake are left alone. It
// returns how many handshakes it started.
//
// Call it at most about once a second: each call abandons the handshake
// in flight, so calling it faster than the server answers would never let
// one complete.
func (t *Tunnel) RetryHandshakes() (int, error) {
	hs, err := t.Handshakes()
	if err != nil {
		return 0, err
	}
	n := 0
	for k, done := range hs {
		if done {
			continue
		}
		p := t.dev.LookupPeer(device.NoisePublicKey(k))
		if p == nil {
			continue
		}
		// Forget the attempt in flight (and wireguard-go's 5 s rate
		// limit on initiations), then send a fresh one.
		p.ExpireCurrentKeypairs()
		if err := p.SendHandshakeInitiation(false); err != nil {
			return n, fmt.Errorf("starting a wireguard handshake: %w", err)
		}
		n++
	}
	return n, nil
}

// Close takes the tunnel down and closes its socket; connections through
// it fail afterwards. It is safe to call more than once.
func (t *Tunnel) Close() error {
	t.once.Do(func() { t.dev.Close() })
	return nil
}

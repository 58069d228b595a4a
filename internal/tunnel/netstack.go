package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// stackTUN is the tunnel's TUN device: a gVisor network stack inside this
// process, whose outbound packets WireGuard reads straight from the link
// endpoint's queue, and into which it writes the packets it decrypted.
//
// It stands in for wireguard-go's tun/netstack, whose device hands each
// outbound packet over on an unbuffered channel from the stack's
// goroutines (WriteNotify) and closes that channel in Close while they may
// still be sending on it: the race detector flags it when a tunnel closes
// under traffic, and a send caught blocked by the close panics. Here Read
// waits on the endpoint's own queue with a context that Close cancels, so
// nothing is ever sent on a channel that closes.
type stackTUN struct {
	ep           *channel.Endpoint
	stack        *stack.Stack
	mtu          int
	dns          []netip.Addr
	hasV4, hasV6 bool
	events       chan tun.Event
	ctx          context.Context // done once Close began: Read returns
	cancel       context.CancelFunc
	once         sync.Once
}

var _ tun.Device = (*stackTUN)(nil)

// nicID is the stack's only interface.
const nicID = 1

// newStackTUN makes the stack with the tunnel's addresses, a default
// route through the tunnel for each family it has, and TCP SACK on.
func newStackTUN(addrs, dns []netip.Addr, mtu int) (*stackTUN, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	ctx, cancel := context.WithCancel(context.Background())
	t := &stackTUN{
		ep:     channel.New(1024, uint32(mtu), ""),
		stack:  s,
		mtu:    mtu,
		dns:    dns,
		events: make(chan tun.Event, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	fail := func(format string, args ...any) (*stackTUN, error) {
		cancel()
		s.Destroy()
		return nil, fmt.Errorf(format, args...)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enabling TCP SACK: %v", err)
	}
	if err := s.CreateNIC(nicID, t.ep); err != nil {
		return fail("creating the interface: %v", err)
	}
	for _, a := range addrs {
		proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
		if a.Is6() {
			proto, t.hasV6 = ipv6.ProtocolNumber, true
		} else {
			t.hasV4 = true
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail("adding address %s: %v", a, err)
		}
	}
	if t.hasV4 {
		s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if t.hasV6 {
		s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	t.events <- tun.EventUp
	return t, nil
}

func (t *stackTUN) File() *os.File           { return nil }
func (t *stackTUN) Name() (string, error)    { return "homelab-netstack", nil }
func (t *stackTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *stackTUN) BatchSize() int           { return 1 }
func (t *stackTUN) Events() <-chan tun.Event { return t.events }

// Read hands WireGuard the stack's next outbound packet; it returns
// os.ErrClosed once Close began.
func (t *stackTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := t.ep.ReadContext(t.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	v := pkt.ToView()
	pkt.DecRef()
	defer v.Release()
	n, err := v.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// Write gives the stack the packets WireGuard decrypted. After Close the
// endpoint is detached and they are dropped.
func (t *stackTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		packet := b[offset:]
		if len(packet) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch packet[0] >> 4 {
		case 4:
			proto = ipv4.ProtocolNumber
		case 6:
			proto = ipv6.ProtocolNumber
		default:
			return 0, syscall.EAFNOSUPPORT
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
		t.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
	return len(bufs), nil
}

// Close stops Read, aborts every connection of the stack, waits for the
// stack's goroutines and removes its interface (which closes the link
// endpoint's queue), then closes the events channel. It is safe to call
// more than once.
func (t *stackTUN) Close() error {
	t.once.Do(func() {
		t.cancel()
		t.stack.Destroy()
		close(t.events)
	})
	return nil
}

// fullAddr is ap as the stack names it, with its network protocol.
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}, proto
}

// dial connects to address (host:port; a host name is resolved with the
// config's DNS servers through the tunnel) over network: tcp, tcp4,
// tcp6, udp, udp4 or udp6.
func (t *stackTUN) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var udpDial bool
	var family string
	switch network {
	case "tcp", "tcp4", "tcp6":
		family = network[3:]
	case "udp", "udp4", "udp6":
		udpDial, family = true, network[3:]
	default:
		return nil, fmt.Errorf("network %q is not tcp or udp", network)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%q has a bad port", address)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = t.resolver().LookupNetIP(ctx, "ip"+family, host); err != nil {
		return nil, err
	}
	var first error
	for _, ip := range ips {
		ip = ip.Unmap()
		if (family == "4" && !ip.Is4()) || (family == "6" && !ip.Is6()) || (ip.Is4() && !t.hasV4) || (ip.Is6() && !t.hasV6) {
			continue
		}
		fa, proto := fullAddr(netip.AddrPortFrom(ip, uint16(pn)))
		var c net.Conn
		if udpDial {
			c, err = gonet.DialUDP(t.stack, nil, &fa, proto)
		} else {
			c, err = gonet.DialContextTCP(ctx, t.stack, fa, proto)
		}
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("no address of %s that the tunnel's addresses can reach", host)
	}
	return nil, first
}

// resolver looks names up with the config's first DNS server, through
// the tunnel.
func (t *stackTUN) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			if len(t.dns) == 0 {
				return nil, errors.New("the tunnel's config names no DNS server")
			}
			return t.dial(ctx, network, netip.AddrPortFrom(t.dns[0], 53).String())
		},
	}
}

// listenTCP listens on addr inside the stack.
func (t *stackTUN) listenTCP(addr netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(addr)
	return gonet.ListenTCP(t.stack, fa, proto)
}

package lb

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock is one proxied TCP socket: a non-blocking descriptor made directly
// with accept4(2), or socket(2) and connect(2), and registered with the
// runtime poller through os.File. Compared with net.TCPConn there is no
// getsockname/getpeername per connection (accept4 returns the client's
// address; the local one is asked for only when a PROXY header needs it),
// no net.Dialer, no context and no address objects.
type sock struct {
	f  *os.File
	rc syscall.RawConn
}

// newSock registers fd (non-blocking, close-on-exec) with the poller. On
// error fd is closed.
func newSock(fd int) (*sock, error) {
	f := os.NewFile(uintptr(fd), "")
	if f == nil {
		unix.Close(fd)
		return nil, errors.New("invalid socket descriptor")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sock{f: f, rc: rc}, nil
}

func (s *sock) Close() error                       { return s.f.Close() }
func (s *sock) Read(b []byte) (int, error)         { return s.f.Read(b) }
func (s *sock) Write(b []byte) (int, error)        { return s.f.Write(b) }
func (s *sock) SetReadDeadline(t time.Time) error  { return s.f.SetReadDeadline(t) }
func (s *sock) SetWriteDeadline(t time.Time) error { return s.f.SetWriteDeadline(t) }
func (s *sock) control(fn func(fd int)) error      { return s.rc.Control(func(fd uintptr) { fn(int(fd)) }) }
func (s *sock) closeWrite() (err error) {
	s.control(func(fd int) { err = unix.Shutdown(fd, unix.SHUT_WR) })
	return
}

// localAddr asks the kernel for the socket's local address.
func (s *sock) localAddr() netip.AddrPort {
	var ap netip.AddrPort
	s.control(func(fd int) {
		if sa, err := unix.Getsockname(fd); err == nil {
			ap = sockaddrToAddrPort(sa)
		}
	})
	return ap
}

func sockaddrToAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// rawAddr is a socket address in the kernel's layout, built once per
// server so a dial neither parses nor allocates one.
type rawAddr struct {
	family int
	any    unix.RawSockaddrAny
	len    uint32
}

// newRawAddr lays ap out for the kernel. No IPv6 zone (scope id) is set:
// configuration validation refuses addresses with one (checkHostPort).
func newRawAddr(ap netip.AddrPort) rawAddr {
	var r rawAddr
	if a := ap.Addr().Unmap(); a.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.any))
		sa.Family = unix.AF_INET
		putPort(&sa.Port, ap.Port())
		sa.Addr = a.As4()
		r.family, r.len = unix.AF_INET, unix.SizeofSockaddrInet4
		return r
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&r.any))
	sa.Family = unix.AF_INET6
	putPort(&sa.Port, ap.Port())
	sa.Addr = ap.Addr().As16()
	r.family, r.len = unix.AF_INET6, unix.SizeofSockaddrInet6
	return r
}

// The kernel's sockaddr ports are in network byte order, whatever the
// machine's: the two bytes of the field, not its integer value.

func putPort(field *uint16, port uint16) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(field))[:], port)
}

func getPort(field *uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(field))[:])
}

// rawToAddrPort decodes an address accept4 filled in.
func rawToAddrPort(r *unix.RawSockaddrAny) netip.AddrPort {
	switch r.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(r))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), getPort(&sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(r))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// acceptor accepts connections from one listening socket, waiting on the
// poller. Its callback is made once, so an accept allocates nothing. The
// new descriptors are non-blocking and close-on-exec; the client's
// address comes with each. One goroutine uses an acceptor.
type acceptor struct {
	lrc  syscall.RawConn
	cb   func(uintptr) bool
	nfd  int
	rsa  unix.RawSockaddrAny
	slen uint32
	err  error
}

func newAcceptor(lrc syscall.RawConn) *acceptor {
	a := &acceptor{lrc: lrc}
	a.cb = a.try
	return a
}

func (a *acceptor) try(lfd uintptr) bool {
	for {
		a.slen = unix.SizeofSockaddrAny
		// accept4 on a non-blocking listener never blocks.
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, lfd, uintptr(unsafe.Pointer(&a.rsa)), uintptr(unsafe.Pointer(&a.slen)),
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			a.nfd, a.err = int(r), nil
			return true
		case unix.EAGAIN:
			return false
		case unix.EINTR, unix.ECONNABORTED:
			// A client that reset before we accepted: take the next.
			continue
		}
		a.err = e
		return true
	}
}

func (a *acceptor) accept() (int, netip.AddrPort, error) {
	if err := a.lrc.Read(a.cb); err != nil {
		return -1, netip.AddrPort{}, err
	}
	if a.err != nil {
		return -1, netip.AddrPort{}, os.NewSyscallError("accept4", a.err)
	}
	return a.nfd, rawToAddrPort(&a.rsa), nil
}

// acceptRaw accepts one connection (a fresh acceptor each time: for tests
// and one-off use).
func acceptRaw(lrc syscall.RawConn) (int, netip.AddrPort, error) {
	return newAcceptor(lrc).accept()
}

// errConnectTimeout is a dial that got no answer within the connect timeout.
var errConnectTimeout = errors.New("connect timeout")

// dialRaw connects a new non-blocking socket to ra, waiting on the
// poller at most timeout. TCP_NODELAY is set (as the net package does):
// the proxy writes what it has at once.
func dialRaw(ra *rawAddr, timeout time.Duration) (*sock, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(ra.family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return nil, os.NewSyscallError("socket", e)
	}
	if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(int(fd))
		return nil, os.NewSyscallError("setsockopt", err)
	}
	// A non-blocking connect returns at once (EINPROGRESS, usually).
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&ra.any)), uintptr(ra.len))
	if e != 0 && e != unix.EINPROGRESS && e != unix.EINTR {
		unix.Close(int(fd))
		return nil, os.NewSyscallError("connect", e)
	}
	s, err := newSock(int(fd))
	if err != nil {
		return nil, err
	}
	if e == 0 {
		return s, nil
	}
	// On a LAN or loopback the handshake is usually done by now: ask
	// once before arming the connect deadline (a timer) and waiting.
	var cerr error
	s.control(func(fd int) {
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&ra.any)), uintptr(ra.len))
	})
	switch e {
	case unix.EISCONN, 0:
		return s, nil
	case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
	default:
		s.Close()
		return nil, os.NewSyscallError("connect", e)
	}
	// Ask connect again, now and whenever the poller says the socket is
	// writable: EISCONN means connected, EALREADY still in progress,
	// anything else is why it failed (one syscall, like SO_ERROR, without
	// SO_ERROR's ambiguous 0). The first ask cannot be skipped: RawConn
	// forgets a readiness the poller saw before the call.
	s.SetWriteDeadline(time.Now().Add(timeout))
	werr := s.rc.Write(func(fd uintptr) bool {
		_, _, e := unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&ra.any)), uintptr(ra.len))
		switch e {
		case unix.EISCONN, 0:
			cerr = nil
		case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
			return false
		default:
			cerr = os.NewSyscallError("connect", e)
		}
		return true
	})
	if werr == nil && cerr == nil {
		s.SetWriteDeadline(time.Time{})
		return s, nil
	}
	s.Close()
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		return nil, errConnectTimeout
	}
	if werr != nil {
		return nil, werr
	}
	return nil, cerr
}

// isClosed reports whether err comes from using a socket already closed
// (by the other direction, a drain or shutdown): not worth a log line.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || strings.Contains(err.Error(), "use of closed")
}

// listenTCP binds a listening socket to ap with SO_REUSEADDR and
// SO_REUSEPORT (so a new process can bind beside an old one during an
// upgrade) and TCP_NODELAY, which accepted sockets inherit (one setsockopt
// per connection fewer). An IPv6 address listens on IPv6 only, so
// "0.0.0.0:443" and "[::]:443" can both be listed. It is made here, not by
// the net package, because a net.Listener cannot wait for accept4 through
// its RawConn.
func listenTCP(ap netip.AddrPort) (*sock, error) {
	ra := newRawAddr(ap)
	fd, err := unix.Socket(ra.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	opts := [][3]int{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1},
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	if ra.family == unix.AF_INET6 {
		opts = append(opts, [3]int{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			unix.Close(fd)
			return nil, os.NewSyscallError("setsockopt", err)
		}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&ra.any)), uintptr(ra.len)); e != 0 {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", e)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err := unix.Listen(fd, 65535); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	return newSock(fd)
}

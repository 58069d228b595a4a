package lb

import (
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Both sockets of a proxied connection have TCP_NODELAY: the backend's is
// set at dial, the client's is inherited from the listening socket.
func TestProxiedSocketsNoDelay(t *testing.T) {
	b := startBackend(t, "a")
	s := startPlainLB(t, b)
	c := dial(t, addr(t, s, "web"))
	c.hello(t)
	var pc *proxyConn
	for _, sv := range s.servers {
		sv.mu.Lock()
		for p := range sv.live {
			pc = p
		}
		sv.mu.Unlock()
	}
	if pc == nil {
		t.Fatal("no live connection")
	}
	for name, sk := range map[string]*sock{"client": pc.client, "backend": pc.backend} {
		var v int
		var err error
		sk.control(func(fd int) { v, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY) })
		if err != nil || v == 0 {
			t.Errorf("%s socket TCP_NODELAY = %d (err %v), want on", name, v, err)
		}
	}
}

// dialRaw reports a refused connect as an error at once, a connect with
// no answer as errConnectTimeout after the timeout, and a good one as a
// connected socket.
func TestDialRaw(t *testing.T) {
	b := startBackend(t, "a")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name    string
		addr    string
		wantErr bool
	}{
		{"good", b.addr, false},
		{"refused", closed, true},
		{"no answer", blackHole(t), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ra := newRawAddr(netip.MustParseAddrPort(tt.addr))
			start := time.Now()
			s, err := dialRaw(&ra, 200*time.Millisecond)
			if (err != nil) != tt.wantErr {
				t.Fatalf("dialRaw(%s) error %v, want error %v", tt.addr, err, tt.wantErr)
			}
			if tt.name == "no answer" && (err != errConnectTimeout || time.Since(start) < 150*time.Millisecond) {
				t.Errorf("dialRaw to a black hole: %v after %v, want errConnectTimeout after about 200ms", err, time.Since(start))
			}
			if err != nil {
				return
			}
			defer s.Close()
			buf := make([]byte, 2)
			s.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := s.Read(buf); err != nil || string(buf[:n]) != "a\n" {
				t.Errorf("read %q, %v; want the greeting", buf[:n], err)
			}
		})
	}
}

// acceptRaw returns the client's address as accept4 reports it, for IPv4
// and IPv6.
func TestAcceptRawAddresses(t *testing.T) {
	for _, la := range []string{"127.0.0.1:0", "[::1]:0"} {
		l, err := listenTCP(netip.MustParseAddrPort(la))
		if err != nil {
			t.Skipf("listening on %s: %v", la, err)
		}
		a := l.localAddr()
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		fd, got, err := acceptRaw(l.rc)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		want := netip.MustParseAddrPort(c.LocalAddr().String())
		if got != want {
			t.Errorf("acceptRaw on %s: client %v, want %v", a, got, want)
		}
		c.Close()
		l.Close()
	}
}

// newRawAddr lays the port out in network byte order (big-endian bytes,
// whatever the machine's), and rawToAddrPort reads it back.
func TestRawAddrPortBytes(t *testing.T) {
	for _, s := range []string{"10.0.2.10:4660", "[2001:db8::1]:4660", "[::ffff:10.0.0.1]:4660"} {
		ap := netip.MustParseAddrPort(s)
		ra := newRawAddr(ap)
		b := (*[4]byte)(unsafe.Pointer(&ra.any))
		if b[2] != 0x12 || b[3] != 0x34 {
			t.Errorf("%s: port bytes %#x %#x, want 0x12 0x34 (4660 in network order)", s, b[2], b[3])
		}
		if got, want := rawToAddrPort(&ra.any), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()); got != want {
			t.Errorf("rawToAddrPort(newRawAddr(%s)) = %v, want %v", s, got, want)
		}
	}
}

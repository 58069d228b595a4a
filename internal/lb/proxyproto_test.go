package lb

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/lb/proxyproto"
	"github.com/homelab-dev/homelab/internal/lb/sni"
)

func TestSendProxyHeaderOnTheWire(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			b := startBackend(t, "a")
			b.record.Store(true)
			s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    proxyProtocol: %s
    servers:
%s`, v, servers(b)))
			c := dialFrom(t, "127.0.0.7", addr(t, s, "web"))
			io.WriteString(c, "GET")
			if got := c.hello(t); got != "a" {
				t.Fatalf("greeting %q", got)
			}
			src := addrPort(c.LocalAddr())
			dst := addrPort(c.RemoteAddr())
			var want []byte
			if v == "v1" {
				want = fmt.Appendf(nil, "PROXY TCP4 127.0.0.7 %s %d %d\r\n", dst.Addr(), src.Port(), dst.Port())
			} else {
				want = []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
				want = append(want, 127, 0, 0, 7, 127, 0, 0, 1, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()))
			}
			want = append(want, "GET"...)
			first := b.firstBytes()
			if len(first) != 1 || !bytes.Equal(first[0], want) {
				t.Fatalf("server received %q, want %q", first, want)
			}
		})
	}
}

func TestAcceptProxyFromTrustedUpstream(t *testing.T) {
	b := startBackend(t, "a")
	b.record.Store(true)
	s := startLB(t, fmt.Sprintf(`
timeouts: {handshake: 300ms}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    acceptProxy: {trusted: [127.0.0.1/32]}
    backend: app
backends:
  - name: app
    proxyProtocol: v1
    servers:
%s`, servers(b)))
	real := netip.MustParseAddrPort("203.0.113.9:41000")
	front := netip.MustParseAddrPort("198.51.100.1:443")
	for _, hdr := range [][]byte{
		proxyproto.AppendV1(nil, real, front),
		proxyproto.AppendV2(nil, real, front),
	} {
		c := dialFrom(t, "127.0.0.1", addr(t, s, "web"))
		// The header and the first data arrive in separate writes.
		c.Write(hdr[:7])
		time.Sleep(5 * time.Millisecond)
		c.Write(hdr[7:])
		c.Write([]byte("hi"))
		if got := c.hello(t); got != "a" {
			t.Fatalf("greeting %q", got)
		}
		c.Close()
	}
	want := "PROXY TCP4 203.0.113.9 198.51.100.1 41000 443\r\nhi"
	for i, f := range b.firstBytes() {
		if string(f) != want {
			t.Errorf("connection %d: server received %q, want %q", i, f, want)
		}
	}

	t.Run("untrusted source refused", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.2", addr(t, s, "web"))
		c.Write(proxyproto.AppendV1(nil, real, front))
		if _, err := c.tryHello(); err == nil {
			t.Fatal("an untrusted upstream got through")
		}
	})
	t.Run("garbage header refused", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", addr(t, s, "web"))
		io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		if _, err := c.tryHello(); err == nil {
			t.Fatal("a connection without a PROXY header got through")
		}
	})
	t.Run("handshake timeout", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", addr(t, s, "web"))
		start := time.Now()
		if _, err := c.tryHello(); err == nil {
			t.Fatal("a silent client got through")
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("closed after %v, want about the 300ms handshake timeout", d)
		}
	})
	rej := s.Status().Frontends[0].Rejected
	if rej[rejUntrusted] != 1 || rej[rejBadProxy] != 1 || rej[rejHandshake] != 1 {
		t.Errorf("rejected = %v, want one each of untrusted, bad header, handshake", rej)
	}
}

func TestSNIRouting(t *testing.T) {
	api, apps, def := startBackend(t, "api"), startBackend(t, "apps"), startBackend(t, "default")
	for _, b := range []*backend{api, apps, def} {
		b.record.Store(true)
	}
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: tls
    listen: ["127.0.0.1:0"]
    routes:
      - sni: [api.lab.example]
        backend: api
      - sni: ["*.apps.example"]
        backend: apps
    backend: default
backends:
  - name: api
    servers:
%s  - name: apps
    servers:
%s  - name: default
    servers:
%s`, servers(api), servers(apps), servers(def)))
	cases := []struct {
		serverName string
		want       string
	}{
		{"api.lab.example", "api"},
		{"API.Lab.Example", "api"},
		{"cloud.apps.example", "apps"},
		{"a.b.apps.example", "apps"},
		{"apps.example", "default"},
		{"other.example", "default"},
		{"", "default"}, // no SNI
	}
	for _, tc := range cases {
		t.Run(tc.serverName, func(t *testing.T) {
			c := dial(t, addr(t, s, "tls"))
			// Send a real ClientHello; the backends are not TLS servers,
			// so we read their greeting from the raw socket.
			c.Write(clientHello(t, tc.serverName))
			got, err := c.tryHello()
			if err != nil {
				t.Fatalf("no greeting: %v", err)
			}
			if got != tc.want {
				t.Errorf("SNI %q reached %s, want %s", tc.serverName, got, tc.want)
			}
		})
	}
	// The backends got the ClientHello untouched.
	for _, f := range api.firstBytes() {
		name, err := sni.ServerName(f)
		if err != nil || name != "api.lab.example" {
			t.Errorf("api server got a ClientHello with SNI %q, %v", name, err)
		}
	}
	t.Run("plain TCP goes to the default", func(t *testing.T) {
		c := dial(t, addr(t, s, "tls"))
		io.WriteString(c, "SSH-2.0-test\r\n")
		if got := c.hello(t); got != "default" {
			t.Errorf("plain connection reached %s", got)
		}
	})
	t.Run("no default backend refuses unknown names", func(t *testing.T) {
		s2 := startLB(t, fmt.Sprintf(`
frontends:
  - name: tls
    listen: ["127.0.0.1:0"]
    routes: [{sni: [api.lab.example], backend: api}]
backends:
  - name: api
    servers:
%s`, servers(api)))
		c := dial(t, addr(t, s2, "tls"))
		c.Write(clientHello(t, "nope.example"))
		if _, err := c.tryHello(); err == nil {
			t.Fatal("unknown name got through")
		}
		if n := s2.Status().Frontends[0].Rejected[rejNoRoute]; n != 1 {
			t.Errorf("no_route rejections = %d, want 1", n)
		}
	})
}

func TestDualStackListen(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0", "[::1]:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	addrs := s.Addrs("web")
	if len(addrs) != 2 {
		t.Fatalf("listeners %v, want 2", addrs)
	}
	for _, a := range addrs {
		c := dial(t, a.String())
		if got := c.hello(t); got != "a" {
			t.Errorf("via %s reached %q", a, got)
		}
	}
}

// clientHello returns the first flight of a crypto/tls client.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	c, srv := net.Pipe()
	defer c.Close()
	defer srv.Close()
	go tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := srv.Read(buf)
		out = append(out, buf[:n]...)
		if _, err2 := sni.ServerName(out); err2 != sni.ErrIncomplete || err != nil {
			return out
		}
	}
}

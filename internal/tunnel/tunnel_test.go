package tunnel

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/vpn"
)

type keyPair struct {
	private vpn.PrivateKey
	public  vpn.Key
}

func key(t *testing.T) keyPair {
	t.Helper()
	priv, pub, err := vpn.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv, pub}
}

// pair opens a server and a client tunnel talking WireGuard over real UDP
// on loopback, both on netstack (no root, no TUN).
func pair(t *testing.T) (server, client *Tunnel) {
	t.Helper()
	ctx := context.Background()
	sk, ck := key(t), key(t)
	server, err := Open(ctx, &vpn.Config{
		Interface: vpn.Interface{
			PrivateKey: sk.private,
			Addresses:  []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")},
		},
		Peers: []vpn.Peer{{
			PublicKey:  ck.public,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")},
		}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	port, err := server.ListenPort()
	if err != nil || port == 0 {
		t.Fatalf("server ListenPort() = %d, %v", port, err)
	}
	// The client's config goes through the parser, as a user's file would.
	text := fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 10.99.0.2/32

[Peer]
PublicKey = %s
Endpoint = 127.0.0.1:%d
AllowedIPs = 10.99.0.0/24
PersistentKeepalive = 25
`, ck.private.Base64(), sk.public, port)
	cfg, err := vpn.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	client, err = Open(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return server, client
}

func TestTCPThroughTunnel(t *testing.T) {
	server, client := pair(t)
	l, err := server.ListenTCP(netip.MustParseAddrPort("10.99.0.1:8080"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			seen <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().String()
		io.Copy(c, c) // echo
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, "tcp", "10.99.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := bytes.Repeat([]byte("through the tunnel "), 4096) // several segments
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Errorf("echo through the tunnel differs from what was sent")
	}
	if from := <-seen; !strings.HasPrefix(from, "10.99.0.2:") {
		t.Errorf("server saw the client as %s, want 10.99.0.2:*", from)
	}
	hs, err := client.Handshakes()
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 {
		t.Fatalf("client Handshakes() = %v, want one peer", hs)
	}
	for k, ok := range hs {
		if !ok {
			t.Errorf("no handshake recorded with peer %s", k)
		}
	}
}

func TestOpenNeedsKeyAndAddress(t *testing.T) {
	k := key(t)
	tests := []struct {
		name string
		cfg  *vpn.Config
		want string
	}{
		{"nil", nil, "no private key"},
		{"no key", &vpn.Config{Interface: vpn.Interface{Addresses: []netip.Prefix{netip.MustParsePrefix("10.8.0.2/32")}}}, "no private key"},
		// vpn.Parse accepts this (a server's address may live elsewhere);
		// the in-process stack cannot do without one.
		{"no address", parse(t, "[Interface]\nPrivateKey = "+k.private.Base64()+"\n"), "[Interface] has no Address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tun, err := Open(context.Background(), tt.cfg, Options{})
			if err == nil {
				tun.Close()
				t.Fatalf("Open succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), k.private.Base64()) {
				t.Errorf("error quotes the private key: %v", err)
			}
		})
	}
}

func parse(t *testing.T, text string) *vpn.Config {
	t.Helper()
	c, err := vpn.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDialNothingListening(t *testing.T) {
	_, client := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The server's stack answers with a reset: an error, not a hang.
	if c, err := client.DialContext(ctx, "tcp", "10.99.0.1:9"); err == nil {
		c.Close()
		t.Fatal("dial to a closed port through the tunnel succeeded")
	}
}

func TestDialOutsideAllowedIPs(t *testing.T) {
	_, client := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	// 192.0.2.1 is routed by no peer: the dial times out with ctx.
	if c, err := client.DialContext(ctx, "tcp", "192.0.2.1:80"); err == nil {
		c.Close()
		t.Fatal("dial to an address no peer routes succeeded")
	}
}

func TestPick(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer l.Close()
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l2.Addr().String()
	l2.Close()

	opened := 0
	tun := &Tunnel{}
	openTunnel := func(context.Context) (*Tunnel, error) { opened++; return tun, nil }
	tests := []struct {
		mode       Mode
		probe      string
		want       Mode
		wantOpened int
	}{
		{ModeAuto, open, ModeDirect, 0},
		{ModeAuto, closed, ModeTunnel, 1},
		{ModeDirect, closed, ModeDirect, 0},
		{ModeTunnel, open, ModeTunnel, 1},
	}
	for _, tt := range tests {
		opened = 0
		d, got, err := Pick(context.Background(), tt.mode, tt.probe, 500*time.Millisecond, openTunnel)
		if err != nil {
			t.Errorf("Pick(%s, %s) error: %v", tt.mode, tt.probe, err)
			continue
		}
		if got != tt.want || opened != tt.wantOpened {
			t.Errorf("Pick(%s, probe %s) = %s (tunnel opened %d times), want %s (%d)", tt.mode, tt.probe, got, opened, tt.want, tt.wantOpened)
		}
		if got == ModeTunnel && d != Dialer(tun) {
			t.Errorf("Pick(%s) returned %T, want the opened tunnel", tt.mode, d)
		}
	}
	if _, _, err := Pick(context.Background(), "sideways", open, 0, openTunnel); err == nil {
		t.Error("Pick with an unknown mode succeeded")
	}
}

// TestRetryHandshakes: a client whose first initiation met a closed port
// (the server was not up yet) completes its handshake as soon as
// RetryHandshakes asks, not at wireguard-go's retry 5 s later; a peer
// with a session is then left alone.
func TestRetryHandshakes(t *testing.T) {
	ctx := context.Background()
	sk, ck := key(t), key(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close() // nothing listens there until the server opens
	client, err := Open(ctx, &vpn.Config{
		Interface: vpn.Interface{PrivateKey: ck.private, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}},
		Peers: []vpn.Peer{{PublicKey: sk.public, Endpoint: fmt.Sprintf("127.0.0.1:%d", port),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, PersistentKeepalive: 25}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	time.Sleep(200 * time.Millisecond) // the keepalive's initiation is lost
	server, err := Open(ctx, &vpn.Config{
		Interface: vpn.Interface{PrivateKey: sk.private, ListenPort: port, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}},
		Peers:     []vpn.Peer{{PublicKey: ck.public, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	handshook := func() bool {
		hs, err := client.Handshakes()
		if err != nil {
			t.Fatal(err)
		}
		return hs[sk.public]
	}
	if handshook() {
		t.Fatal("handshake completed before the server listened: the test proves nothing")
	}
	n, err := client.RetryHandshakes()
	if err != nil || n != 1 {
		t.Fatalf("RetryHandshakes() = %d, %v, want 1 handshake started", n, err)
	}
	deadline := time.Now().Add(2 * time.Second) // wireguard-go's own retry: 5 s
	for !handshook() {
		if time.Now().After(deadline) {
			t.Fatal("no handshake within 2s of RetryHandshakes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, err := client.RetryHandshakes(); err != nil || n != 0 {
		t.Errorf("RetryHandshakes() with a session = %d, %v, want 0 (left alone)", n, err)
	}
	tx, rx, err := client.Traffic()
	if err != nil || tx == 0 || rx == 0 {
		t.Errorf("Traffic() = tx %d, rx %d, %v, want both counted", tx, rx, err)
	}
}

// TestCloseUnderTraffic closes tunnels while connections through them
// still send both ways (under -race: the stack's goroutines still write
// packets while Close tears it down); Close returns promptly and the
// connections fail afterwards.
func TestCloseUnderTraffic(t *testing.T) {
	for i := 0; i < 10; i++ {
		server, client := pair(t)
		l, err := server.ListenTCP(netip.MustParseAddrPort("10.99.0.1:8080"))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go io.Copy(c, c) // echo
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var conns []net.Conn
		for range 3 {
			c, err := client.DialContext(ctx, "tcp", "10.99.0.1:8080")
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			go io.Copy(io.Discard, c)
			go func() {
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
		cancel()
		time.Sleep(time.Duration(i) * time.Millisecond)
		t0 := time.Now()
		client.Close()
		server.Close()
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("closing two tunnels under traffic took %s", d)
		}
		for _, c := range conns {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte("after close")); err == nil {
				t.Errorf("a write through a closed tunnel succeeded")
			}
			c.Close()
		}
	}
}

func TestDialNeedsDNSForNames(t *testing.T) {
	_, client := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := client.DialContext(ctx, "tcp", "kube.lab.internal:6443")
	if err == nil || !strings.Contains(err.Error(), "names no DNS server") {
		t.Errorf("dialing a name without a DNS server = %v, want an error saying the config names none", err)
	}
	if _, err := client.DialContext(ctx, "sctp", "10.99.0.1:1"); err == nil {
		t.Error("dialing over sctp succeeded")
	}
}

package lb

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a TCP server started by a test. Each connection gets the
// server's name and a newline, then an echo of what it sends.
type backend struct {
	name string
	ln   net.Listener
	addr string

	mu    sync.Mutex
	conns []net.Conn
	first [][]byte // first bytes of each connection, when record is set
	wg    sync.WaitGroup
	// record makes the server read what arrives before greeting: it keeps
	// the first read (PROXY header, ClientHello) in first.
	record atomic.Bool
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	return startBackendAt(t, name, "127.0.0.1:0")
}

func startBackendAt(t *testing.T, name, addr string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("starting backend %s: %v", name, err)
	}
	b := &backend{name: name, ln: ln, addr: ln.Addr().String()}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			if b.record.Load() {
				buf := make([]byte, 4096)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, _ := c.Read(buf)
				// Gather what follows closely (header then data).
				for n < len(buf) {
					c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					m, err := c.Read(buf[n:])
					n += m
					if err != nil {
						break
					}
				}
				c.SetReadDeadline(time.Time{})
				b.mu.Lock()
				b.first = append(b.first, buf[:n])
				b.mu.Unlock()
			}
			if _, err := io.WriteString(c, b.name+"\n"); err != nil {
				return
			}
			io.Copy(c, c)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}()
	}
}

// stop closes the listener and every connection.
func (b *backend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) firstBytes() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.first...)
}

// startLB parses yaml (with %s placeholders already filled), starts a
// balancer and closes it at the end of the test.
func startLB(t *testing.T, yaml string) *Balancer {
	t.Helper()
	cfg, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, yaml)
	}
	if d := os.Getenv("LB_TEST_PARK_AFTER"); d != "" {
		// Run the suite with aggressive parking: LB_TEST_PARK_AFTER=1ms.
		v, err := time.ParseDuration(d)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Tuning.ParkAfter == Duration(DefaultParkAfter) {
			cfg.Tuning.ParkAfter = Duration(v)
		}
	}
	s := &Balancer{Config: cfg, Logger: quietLogger}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// addr returns the first listen address of a frontend.
func addr(t *testing.T, s *Balancer, frontend string) string {
	t.Helper()
	a := s.Addrs(frontend)
	if len(a) == 0 {
		t.Fatalf("frontend %s has no listener", frontend)
	}
	return a[0].String()
}

// client is a test connection through the balancer.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, address string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", address, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", address, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{Conn: c, r: bufio.NewReader(c)}
}

func dialFrom(t *testing.T, src, address string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", address)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", address, src, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{Conn: c, r: bufio.NewReader(c)}
}

// hello reads the backend's greeting line: the name of the server reached.
func (c *client) hello(t *testing.T) string {
	t.Helper()
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading greeting: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

// tryHello returns the greeting or an error (for refused connections).
func (c *client) tryHello() (string, error) {
	line, err := c.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// roundTrip sends msg and reads it back.
func (c *client) roundTrip(t *testing.T, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c.r, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serverState(s *Balancer, backend, address string) string {
	for _, b := range s.Status().Backends {
		if b.Name != backend {
			continue
		}
		for _, sv := range b.Servers {
			if sv.Address == address {
				return sv.State
			}
		}
	}
	return "absent"
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// plainConfig is the smallest useful config: frontend web on a loopback
// port in front of backend app, round robin over bs, every other setting
// at its default.
const plainConfig = `
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`

// startPlainLB runs plainConfig over bs.
func startPlainLB(t *testing.T, bs ...*backend) *Balancer {
	t.Helper()
	return startLB(t, fmt.Sprintf(plainConfig, servers(bs...)))
}

func servers(bs ...*backend) string {
	var b strings.Builder
	for _, x := range bs {
		fmt.Fprintf(&b, "      - address: %s\n", x.addr)
	}
	return b.String()
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

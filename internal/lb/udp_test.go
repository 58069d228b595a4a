package lb

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// udpEcho answers each datagram with name + ":" + payload.
func udpEcho(t *testing.T, name string) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	return c.LocalAddr().String()
}

func TestUDPForwarding(t *testing.T) {
	a, b := udpEcho(t, "a"), udpEcho(t, "b")
	s := startLB(t, fmt.Sprintf(`
timeouts: {udpIdle: 300ms}
frontends:
  - name: dns
    protocol: udp
    listen: ["127.0.0.1:0"]
    deny: [127.0.0.9/32]
    backend: dns
backends:
  - name: dns
    servers:
      - address: %s
      - address: %s
`, a, b))
	front := addr(t, s, "dns")
	exchange := func(c net.Conn, msg string) (string, error) {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	c1, err := net.Dial("udp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	first, err := exchange(c1, "q1")
	if err != nil {
		t.Fatalf("first exchange: %v", err)
	}
	server, _, _ := strings.Cut(first, ":")
	// One client address stays on one server (a flow).
	for i := range 5 {
		got, err := exchange(c1, fmt.Sprintf("q%d", i))
		if err != nil || got != fmt.Sprintf("%s:q%d", server, i) {
			t.Fatalf("exchange %d: %q, %v", i, got, err)
		}
	}
	// A large datagram goes through whole.
	big := strings.Repeat("x", 60000)
	if got, err := exchange(c1, big); err != nil || got != server+":"+big {
		t.Fatalf("60000-byte datagram: %d bytes back, %v", len(got), err)
	}
	// Another client gets the other server (round robin).
	c2, _ := net.Dial("udp", front)
	defer c2.Close()
	got, err := exchange(c2, "hi")
	if err != nil || strings.HasPrefix(got, server+":") {
		t.Errorf("second client: %q, %v; want the other server", got, err)
	}
	if st := s.Status().Frontends[0]; st.Active != 2 || st.Accepted != 2 {
		t.Errorf("flows active %d accepted %d, want 2 and 2", st.Active, st.Accepted)
	}
	// Denied sources get nothing.
	c3, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.9")}, net.UDPAddrFromAddrPort(addrPort(c1.RemoteAddr())))
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c3.Write([]byte("let me in"))
	if _, err := c3.Read(make([]byte, 100)); err == nil {
		t.Error("denied source got an answer")
	}
	// Flows expire after the idle timeout.
	waitFor(t, "flows to expire", 3*time.Second, func() bool { return s.Status().Frontends[0].Active == 0 })
	if got, err := exchange(c1, "again"); err != nil || !strings.HasSuffix(got, ":again") {
		t.Errorf("after expiry: %q, %v", got, err)
	}
}

func TestUDPDrain(t *testing.T) {
	a, b := udpEcho(t, "a"), udpEcho(t, "b")
	conf := func(server string) string {
		return fmt.Sprintf(`
timeouts: {udpIdle: 1m}
frontends:
  - name: dns
    protocol: udp
    listen: ["127.0.0.1:0"]
    backend: dns
backends:
  - name: dns
    drainTimeout: 200ms
    servers:
      - address: %s
`, server)
	}
	s := startLB(t, conf(a))
	front := addr(t, s, "dns")
	c, err := net.Dial("udp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(msg string) string {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte(msg))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("exchange %q: %v", msg, err)
		}
		return string(buf[:n])
	}
	if got := ask("1"); got != "a:1" {
		t.Fatalf("got %q", got)
	}
	cfg, err := Parse([]byte(conf(b)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Frontends[0].Listen = []string{front}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	// The flow keeps its server while draining, then moves.
	if got := ask("2"); got != "a:2" {
		t.Errorf("during drain got %q, want a:2", got)
	}
	time.Sleep(400 * time.Millisecond)
	if got := ask("3"); got != "b:3" {
		t.Errorf("after the drain timeout got %q, want b:3", got)
	}
}

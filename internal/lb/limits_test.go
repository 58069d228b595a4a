package lb

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestPerSourceConnectionLimit(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
limits: {perSourceConnections: 2}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	a := addr(t, s, "web")
	c1, c2 := dialFrom(t, "127.0.0.2", a), dialFrom(t, "127.0.0.2", a)
	c1.hello(t)
	c2.hello(t)
	if _, err := dialFrom(t, "127.0.0.2", a).tryHello(); err == nil {
		t.Fatal("third connection from one source got through")
	}
	// Another source is not affected.
	dialFrom(t, "127.0.0.3", a).hello(t)
	// Closing one frees a slot.
	c1.Close()
	waitFor(t, "the slot to free", 2*time.Second, func() bool {
		c := dialFrom(t, "127.0.0.2", a)
		_, err := c.tryHello()
		c.Close()
		return err == nil
	})
	if n := s.Status().Frontends[0].Rejected[rejSourceConn]; n < 1 {
		t.Errorf("source_connections rejections = %d", n)
	}
}

func TestPerSourceRateLimit(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
limits: {perSourceRate: 1, perSourceBurst: 3}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	a := addr(t, s, "web")
	ok := 0
	for range 6 {
		c := dialFrom(t, "127.0.0.4", a)
		if _, err := c.tryHello(); err == nil {
			ok++
		}
		c.Close()
	}
	if ok != 3 {
		t.Errorf("%d of 6 quick connections admitted, want the burst of 3", ok)
	}
	dialFrom(t, "127.0.0.5", a).hello(t) // other sources unaffected
	time.Sleep(1100 * time.Millisecond)  // 1/s refills one token
	dialFrom(t, "127.0.0.4", a).hello(t)
	if n := s.Status().Frontends[0].Rejected[rejSourceRate]; n != 3 {
		t.Errorf("source_rate rejections = %d, want 3", n)
	}
}

func TestAllowDeny(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    allow: [127.0.0.0/24]
    deny: [127.0.0.66/32]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	a := addr(t, s, "web")
	for _, tc := range []struct {
		src  string
		pass bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.65", true},
		{"127.0.0.66", false}, // denied explicitly
		{"127.0.1.1", false},  // not in allow
	} {
		c := dialFrom(t, tc.src, a)
		_, err := c.tryHello()
		if (err == nil) != tc.pass {
			t.Errorf("from %s: admitted=%v, want %v", tc.src, err == nil, tc.pass)
		}
	}
	if n := s.Status().Frontends[0].Rejected[rejDenied]; n != 2 {
		t.Errorf("denied = %d, want 2", n)
	}
}

// TestGlobalCapQueues checks graceful degradation: at the cap, a new
// client waits in the backlog and is served once a slot frees, instead
// of being refused.
func TestGlobalCapQueues(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
limits: {maxConnections: 2}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	a := addr(t, s, "web")
	c1, c2 := dial(t, a), dial(t, a)
	c1.hello(t)
	c2.hello(t)
	c3 := dial(t, a) // the kernel completes the handshake; we do not accept yet
	got := make(chan string, 1)
	go func() {
		name, _ := c3.tryHello()
		got <- name
	}()
	select {
	case name := <-got:
		t.Fatalf("third connection served (%q) while at the cap", name)
	case <-time.After(200 * time.Millisecond):
	}
	c1.Close()
	select {
	case name := <-got:
		if name != "a" {
			t.Fatalf("queued connection got %q", name)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("queued connection not served after a slot freed")
	}
	if st := s.Status(); st.Connections > 2 {
		t.Errorf("connections = %d, want at most the cap", st.Connections)
	}
}

func TestIdleTimeout(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
timeouts: {idle: 300ms}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	a := addr(t, s, "web")
	// Traffic in one direction only keeps both directions alive.
	busy := dial(t, a)
	busy.hello(t)
	for range 8 {
		busy.roundTrip(t, "ping")
		time.Sleep(100 * time.Millisecond)
	}
	idle := dial(t, a)
	idle.hello(t)
	start := time.Now()
	buf := make([]byte, 1)
	_, err := idle.r.Read(buf)
	if err != io.EOF {
		t.Fatalf("idle connection read: %v, want EOF", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle connection closed after %v, want about 300ms", d)
	}
}

// blackHole returns a loopback address whose connects hang: a listener
// with a full accept queue drops new SYNs.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	a := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 4 { // fill the queue
		c, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	if c, err := net.DialTimeout("tcp", a, 100*time.Millisecond); err == nil {
		c.Close()
		t.Skip("cannot make a connect hang on this host")
	}
	return a
}

func TestConnectTimeoutRetriesNext(t *testing.T) {
	hole := blackHole(t)
	good := startBackend(t, "good")
	s := startLB(t, fmt.Sprintf(`
timeouts: {connect: 200ms}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    passive: {disable: true}
    servers:
      - address: %s
      - address: %s
`, hole, good.addr))
	var slow int
	for range 2 { // round robin: one of the two tries the black hole first
		start := time.Now()
		c := dial(t, addr(t, s, "web"))
		if got := c.hello(t); got != "good" {
			t.Fatalf("reached %q", got)
		}
		if d := time.Since(start); d >= 150*time.Millisecond {
			slow++
			if d > 2*time.Second {
				t.Errorf("retry took %v, want about the 200ms connect timeout", d)
			}
		}
		c.Close()
	}
	// Round robin tries the black hole first for one of the two.
	if slow < 1 {
		t.Errorf("no connection waited for the connect timeout; the black hole was never tried")
	}
}

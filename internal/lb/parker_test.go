package lb

import (
	"fmt"
	"io"
	"testing"
	"time"
)

func parkConfig(idle, park, drain string, b *backend) string {
	return fmt.Sprintf(`
timeouts: {idle: %s}
tuning: {parkAfter: %s}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    drainTimeout: %s
    servers:
%s`, idle, park, drain, servers(b))
}

func TestIdleConnectionsPark(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, parkConfig("1m", "50ms", "30s", b))
	var cs []*client
	for range 20 {
		c := dial(t, addr(t, s, "web"))
		c.hello(t)
		c.roundTrip(t, "x")
		cs = append(cs, c)
	}
	waitFor(t, "all 40 directions to park", 3*time.Second, func() bool { return s.parker.count() == 40 })
	// Parked connections wake up on data, in both directions, and park again.
	for i, c := range cs {
		c.roundTrip(t, fmt.Sprintf("after parking %d", i))
	}
	waitFor(t, "the directions to park again", 3*time.Second, func() bool { return s.parker.count() == 40 })
	// Half-close from a parked client reaches the server, which closes.
	cs[0].Conn.(interface{ CloseWrite() error }).CloseWrite()
	if _, err := io.ReadAll(cs[0].r); err != nil {
		t.Errorf("reading to EOF after half-close: %v", err)
	}
	waitFor(t, "the half-closed connection to end", 3*time.Second, func() bool { return s.Status().Frontends[0].Active == 19 })
	// A client closing while parked is cleaned up.
	cs[1].Close()
	waitFor(t, "the closed connection to end", 3*time.Second, func() bool { return s.Status().Frontends[0].Active == 18 })
}

func TestParkedIdleTimeout(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, parkConfig("300ms", "20ms", "30s", b))
	c := dial(t, addr(t, s, "web"))
	c.hello(t)
	start := time.Now()
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Fatalf("parked idle connection read: %v, want EOF", err)
	}
	// The parker checks idle timeouts once a second.
	if d := time.Since(start); d < 250*time.Millisecond || d > 2500*time.Millisecond {
		t.Errorf("closed after %v, want the 300ms idle timeout (+1s scan)", d)
	}
	waitFor(t, "cleanup", 2*time.Second, func() bool { return s.Status().Frontends[0].Active == 0 && s.parker.count() == 0 })
}

func TestParkedDrainAndClose(t *testing.T) {
	old, nw := startBackend(t, "old"), startBackend(t, "new")
	s := startLB(t, parkConfig("1m", "20ms", "200ms", old))
	a := addr(t, s, "web")
	c := dial(t, a)
	c.hello(t)
	waitFor(t, "park", 2*time.Second, func() bool { return s.parker.count() == 2 })
	if err := s.Reload(oneBackendConfig(t, a, "200ms", nw)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("drained parked connection still open")
	}
	waitFor(t, "cleanup after drain", 2*time.Second, func() bool {
		return s.Status().Frontends[0].Active == 0 && s.parker.count() == 0
	})
	c2 := dial(t, a)
	c2.hello(t)
	waitFor(t, "park", 2*time.Second, func() bool { return s.parker.count() == 2 })
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with parked connections")
	}
	if _, err := c2.r.ReadByte(); err == nil {
		t.Error("parked connection open after Close")
	}
}

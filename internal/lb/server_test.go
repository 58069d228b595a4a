package lb

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestZeroValueRunReloadClose(t *testing.T) {
	b := startBackend(t, "a")
	var s Balancer // zero value
	s.Logger = quietLogger
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	waitFor(t, "Run to start", 2*time.Second, func() bool { return s.state.Load() != nil })
	cfg, err := Parse([]byte(fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b))))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr(t, &s, "web"))
	c.hello(t)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := c.tryHello(); err == nil {
		t.Error("connection still open after Run returned")
	}
	if err := s.Reload(cfg); err == nil {
		t.Error("Reload after Close succeeded")
	}
}

func TestCloseEndsPendingHandshakes(t *testing.T) {
	b := startBackend(t, "a")
	s := startLB(t, fmt.Sprintf(`
timeouts: {handshake: 30s}
frontends:
  - name: tls
    listen: ["127.0.0.1:0"]
    routes: [{sni: [x.example], backend: app}]
    backend: app
backends:
  - name: app
    servers:
%s`, servers(b)))
	c := dial(t, addr(t, s, "tls")) // sends nothing: the peek waits
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a client in its handshake", d)
	}
	if _, err := c.tryHello(); err == nil {
		t.Error("pending connection got through after Close")
	}
}

func TestShutdownLetsConnectionsFinish(t *testing.T) {
	b := startBackend(t, "a")
	s := startPlainLB(t, b)
	a := addr(t, s, "web")
	c := dial(t, a)
	c.hello(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	// New connections are refused at once...
	waitFor(t, "the listener to close", 2*time.Second, func() bool {
		nc, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	// ...while the open one keeps working until its client leaves.
	c.roundTrip(t, "still served")
	select {
	case <-done:
		t.Fatal("Shutdown returned with a connection open")
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
}

func TestShutdownGraceExpires(t *testing.T) {
	b := startBackend(t, "a")
	s := startPlainLB(t, b)
	c := dial(t, addr(t, s, "web"))
	c.hello(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	s.Shutdown(ctx)
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("Shutdown took %v, want about the 200ms grace", d)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection open after the grace period")
	}
}

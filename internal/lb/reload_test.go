package lb

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func oneBackendConfig(t *testing.T, listen string, drain string, bs ...*backend) *Config {
	t.Helper()
	cfg, err := Parse([]byte(fmt.Sprintf(`
frontends:
  - name: web
    listen: [%q]
    backend: app
backends:
  - name: app
    drainTimeout: %s
    servers:
%s`, listen, drain, servers(bs...))))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestReloadKeepsConnectionsAndListeners(t *testing.T) {
	old, nw := startBackend(t, "old"), startBackend(t, "new")
	s := startPlainLB(t, old)
	a := addr(t, s, "web")
	inflight := dial(t, a)
	if got := inflight.hello(t); got != "old" {
		t.Fatalf("greeting %q", got)
	}

	// Clients connect in a loop while the config flips back and forth.
	var refused, served atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", a, time.Second)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					refused.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 4)
				if _, err := c.Read(buf); err != nil {
					firstErr.CompareAndSwap(nil, err)
					refused.Add(1)
				} else {
					served.Add(1)
				}
				c.Close()
			}
		}()
	}
	for i := range 20 {
		b := nw
		if i%2 == 1 {
			b = old
		}
		if err := s.Reload(oneBackendConfig(t, a, "30s", b)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Reload(oneBackendConfig(t, a, "30s", nw)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if refused.Load() != 0 || served.Load() == 0 {
		t.Errorf("during 21 reloads: %d served, %d failed (first: %v, rejected: %v); want none failed",
			served.Load(), refused.Load(), firstErr.Load(), s.Status().Frontends[0].Rejected)
	}
	if got := addr(t, s, "web"); got != a {
		t.Errorf("listener moved from %s to %s", a, got)
	}
	// The connection made before the reloads still talks to its server.
	inflight.roundTrip(t, "still on old")
	// New connections go to the new server.
	if got := dial(t, a).hello(t); got != "new" {
		t.Errorf("new connection reached %q, want new", got)
	}
	if st := serverState(s, "app", old.addr); st != "draining" {
		t.Errorf("old server state = %s, want draining", st)
	}
	if n := s.Status().Reloads; n != 21 {
		t.Errorf("reloads = %d, want 21", n)
	}
}

func TestDrainTimeoutClosesRemovedServerConnections(t *testing.T) {
	old, nw := startBackend(t, "old"), startBackend(t, "new")
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    drainTimeout: 300ms
    servers:
%s`, servers(old)))
	a := addr(t, s, "web")
	c := dial(t, a)
	c.hello(t)
	start := time.Now()
	if err := s.Reload(oneBackendConfig(t, a, "300ms", nw)); err != nil {
		t.Fatal(err)
	}
	c.roundTrip(t, "during drain")
	buf := make([]byte, 1)
	if _, err := c.r.Read(buf); err == nil {
		t.Fatal("read data after the drain timeout")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("drained connection closed after %v, want about 300ms", d)
	}
	waitFor(t, "the drained server to leave the status", 2*time.Second, func() bool {
		return serverState(s, "app", old.addr) == "absent"
	})
}

func TestReloadRejectsBadConfig(t *testing.T) {
	b := startBackend(t, "a")
	s := startPlainLB(t, b)
	a := addr(t, s, "web")

	bad := oneBackendConfig(t, a, "1s", b)
	bad.Frontends[0].Backend = "missing"
	err := s.Reload(bad)
	if err == nil || !strings.Contains(err.Error(), `unknown backend "missing"`) {
		t.Errorf("Reload(invalid) = %v, want an unknown backend error", err)
	}

	// A listener that cannot be bound: nothing changes.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	clash := oneBackendConfig(t, a, "1s", b)
	clash.Frontends = append(clash.Frontends, Frontend{Name: "other", Protocol: "tcp", Listen: []string{busy.Addr().String()}, Backend: "app"})
	// The busy socket has no SO_REUSEPORT, so binding it fails.
	err = s.Reload(clash)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Reload(port in use) = %v, want address already in use", err)
	}
	if len(s.Addrs("other")) != 0 {
		t.Error("a frontend of the rejected config is listening")
	}
	if got := dial(t, a).hello(t); got != "a" {
		t.Errorf("after rejected reloads the old config serves %q", got)
	}
	if st := s.Status(); st.ReloadFails != 2 || st.Reloads != 0 {
		t.Errorf("reloads %d ok, %d failed; want 0 and 2", st.Reloads, st.ReloadFails)
	}
}

func TestFileReloader(t *testing.T) {
	one, two := startBackend(t, "one"), startBackend(t, "two")
	// Reserve a port for the frontend.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	a := ln.Addr().String()
	ln.Close()
	conf := func(b *backend) string {
		return fmt.Sprintf("frontends:\n  - name: web\n    listen: [%q]\n    backend: app\nbackends:\n  - name: app\n    servers:\n%s", a, servers(b))
	}
	path := filepath.Join(t.TempDir(), "lb.yaml")
	os.WriteFile(path, []byte(conf(one)), 0o600)
	first, _ := os.ReadFile(path)
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &Balancer{Config: cfg, Logger: quietLogger}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	results := make(chan error, 10)
	hup := make(chan os.Signal, 1)
	r := &FileReloader{Path: path, Balancer: s, Trigger: hup, Interval: 20 * time.Millisecond, Logger: quietLogger, Current: first,
		OnReload: func(err error) { results <- err }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	os.WriteFile(path, []byte(conf(two)), 0o600)
	if err := <-results; err != nil {
		t.Fatalf("reload on file change: %v", err)
	}
	if got := dial(t, a).hello(t); got != "two" {
		t.Errorf("after the file changed, reached %q", got)
	}
	os.WriteFile(path, []byte("frontends: [oops"), 0o600)
	if err := <-results; err == nil {
		t.Fatal("a broken file was accepted")
	}
	if got := dial(t, a).hello(t); got != "two" {
		t.Errorf("after a broken file, reached %q; the old config must stay", got)
	}
	os.WriteFile(path, []byte(conf(one)), 0o600)
	<-results
	hup <- syscall.SIGHUP
	if err := <-results; err != nil {
		t.Fatalf("reload on signal: %v", err)
	}
	if got := dial(t, a).hello(t); got != "one" {
		t.Errorf("reached %q, want one", got)
	}
}

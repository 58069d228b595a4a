package lb

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func TestProxyBothWaysAndHalfClose(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		t.Run(fmt.Sprintf("noSplice=%v", noSplice), func(t *testing.T) {
			b := startBackend(t, "a")
			s := startLB(t, fmt.Sprintf(`
tuning: {noSplice: %v, pipeSize: 65536}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
%s`, noSplice, servers(b)))
			c := dial(t, addr(t, s, "web"))
			if got := c.hello(t); got != "a" {
				t.Fatalf("greeting = %q, want a", got)
			}
			c.roundTrip(t, "hello")
			// 8 MiB each way, written while reading, checks bulk and order.
			payload := make([]byte, 8<<20)
			rand.Read(payload)
			errc := make(chan error, 1)
			go func() {
				_, err := c.Write(payload)
				if err == nil {
					err = c.Conn.(*net.TCPConn).CloseWrite()
				}
				errc <- err
			}()
			got, err := io.ReadAll(c.r)
			if err != nil {
				t.Fatalf("reading echo: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("writing: %v", err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("echo of %d bytes differs (got %d bytes)", len(payload), len(got))
			}
			waitFor(t, "connection to end", 2*time.Second, func() bool { return s.Status().Frontends[0].Active == 0 })
			st := s.Status()
			if in := st.Frontends[0].BytesIn; in != uint64(len(payload))+5 {
				t.Errorf("frontend bytesIn = %d, want %d", in, len(payload)+5)
			}
			if out := st.Frontends[0].BytesOut; out != uint64(len(payload))+7 {
				t.Errorf("frontend bytesOut = %d, want %d", out, len(payload)+7)
			}
			// Bulk went through pipes (or, without splice, through none).
			if open := s.pipes.open.Load(); (open > 0) == noSplice {
				t.Errorf("%d pipes open after 8 MiB with noSplice=%v", open, noSplice)
			}
			if s.pipes.inUse.Load() != 0 {
				t.Errorf("pipes in use after the connection ended: %d", s.pipes.inUse.Load())
			}
		})
	}
}

func TestIdleConnectionHoldsNoPipe(t *testing.T) {
	b := startBackend(t, "a")
	s := startPlainLB(t, b)
	var cs []*client
	for range 20 {
		c := dial(t, addr(t, s, "web"))
		c.hello(t)
		c.roundTrip(t, "x")
		cs = append(cs, c)
	}
	waitFor(t, "pipes to return to the pool", time.Second, func() bool { return s.pipes.inUse.Load() == 0 })
	if open := s.pipes.open.Load(); open > 4 {
		t.Errorf("%d pipes open for 20 idle connections; want a few pooled ones", open)
	}
	for _, c := range cs {
		c.roundTrip(t, "still there")
	}
}

func TestBalanceAlgorithms(t *testing.T) {
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	t.Run("weighted roundrobin", func(t *testing.T) {
		s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    balance: roundrobin
    servers:
      - {address: %s, weight: 1}
      - {address: %s, weight: 2}
      - {address: %s, weight: 1}
`, a.addr, b.addr, c.addr))
		count := map[string]int{}
		for range 8 {
			cl := dial(t, addr(t, s, "web"))
			count[cl.hello(t)]++
			cl.Close()
		}
		if count["a"] != 2 || count["b"] != 4 || count["c"] != 2 {
			t.Errorf("8 connections went %v, want a:2 b:4 c:2", count)
		}
	})
	t.Run("leastconn", func(t *testing.T) {
		s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    balance: leastconn
    servers:
%s`, servers(a, b)))
		first := dial(t, addr(t, s, "web"))
		busy := first.hello(t)
		// While the first stays open, new ones go to the other server.
		for range 3 {
			cl := dial(t, addr(t, s, "web"))
			got := cl.hello(t)
			if got == busy {
				t.Fatalf("leastconn picked busy server %s", busy)
			}
			cl.Close()
			waitFor(t, "close", time.Second, func() bool { return s.Status().Frontends[0].Active == 1 })
		}
	})
	t.Run("p2c", func(t *testing.T) {
		s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    balance: p2c
    servers:
%s`, servers(a, b)))
		// With two servers p2c always compares both: open connections
		// alternate between them.
		count := map[string]int{}
		for range 6 {
			cl := dial(t, addr(t, s, "web"))
			count[cl.hello(t)]++
		}
		if count["a"] != 3 || count["b"] != 3 {
			t.Errorf("6 open connections went %v, want 3 and 3", count)
		}
	})
	t.Run("hash", func(t *testing.T) {
		s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    balance: hash
    servers:
%s`, servers(a, b, c)))
		where := map[string]string{}
		for i := 2; i < 40; i++ {
			src := fmt.Sprintf("127.0.0.%d", i)
			for range 2 {
				cl := dialFrom(t, src, addr(t, s, "web"))
				got := cl.hello(t)
				cl.Close()
				if prev, ok := where[src]; ok && prev != got {
					t.Fatalf("client %s went to %s then %s", src, prev, got)
				}
				where[src] = got
			}
		}
		used := map[string]int{}
		for _, v := range where {
			used[v]++
		}
		if len(used) != 3 {
			t.Errorf("38 clients used servers %v, want all three", used)
		}
		// Removing c moves only c's clients.
		cfg := *s.Config
		cfg.Backends = []Backend{cfg.Backends[0]}
		cfg.Backends[0].Servers = cfg.Backends[0].Servers[:2]
		if err := s.Reload(&cfg); err != nil {
			t.Fatal(err)
		}
		for src, was := range where {
			if was == "c" {
				continue
			}
			cl := dialFrom(t, src, addr(t, s, "web"))
			if got := cl.hello(t); got != was {
				t.Errorf("client %s moved from %s to %s when c left", src, was, got)
			}
			cl.Close()
		}
	})
}

func TestRetryNextServerAndPassiveEjection(t *testing.T) {
	dead := closedAddr(t)
	good := startBackend(t, "good")
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    passive: {failures: 2, ejectFor: 1h}
    servers:
      - address: %s
      - address: %s
`, dead, good.addr))
	for i := range 6 {
		c := dial(t, addr(t, s, "web"))
		if got := c.hello(t); got != "good" {
			t.Fatalf("connection %d reached %q, want good (the dead server must be retried past)", i, got)
		}
		c.Close()
	}
	if st := serverState(s, "app", dead); st != "ejected" {
		t.Errorf("dead server state = %s, want ejected", st)
	}
	var errs uint64
	for _, sv := range s.Status().Backends[0].Servers {
		if sv.Address == dead {
			errs = sv.ConnectErrors
		}
	}
	// A refused connect ejects at once, whatever failures says: nothing
	// listens there.
	if errs != 1 {
		t.Errorf("connect errors on dead server = %d, want 1 (refused, so ejected at once, then not tried)", errs)
	}
}

func TestAllServersDownRefuses(t *testing.T) {
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers:
      - address: %s
`, closedAddr(t)))
	c := dial(t, addr(t, s, "web"))
	if _, err := c.tryHello(); err == nil {
		t.Fatal("got a greeting with no server up")
	}
	if n := s.Status().Backends[0].NoServer; n != 1 {
		t.Errorf("noServer = %d, want 1", n)
	}
}

func TestManyConcurrentConnections(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	s := startPlainLB(t, a, b)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr(t, s, "web"))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			msg := fmt.Sprintf("message %d", i)
			buf := make([]byte, 2+len(msg))
			io.WriteString(c, msg)
			if _, err := io.ReadFull(c, buf); err != nil {
				errs <- err
				return
			}
			if string(buf[2:]) != msg {
				errs <- fmt.Errorf("got %q", buf)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

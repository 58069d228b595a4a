package lb

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// resetter is a server that resets every connection: before sending
// anything (as a server killed with the connection in its accept queue
// does) or, with greet, after sending a greeting.
type resetter struct {
	ln    net.Listener
	addr  string
	greet bool
	wg    sync.WaitGroup
}

func startResetter(t *testing.T, greet bool) *resetter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &resetter{ln: ln, addr: ln.Addr().String(), greet: greet}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if r.greet {
				io.WriteString(c, "resetter\n")
			}
			// Wait for the client's bytes and leave them unread: the
			// close then sends a reset.
			time.Sleep(30 * time.Millisecond)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func replayConfig(on bool, bytes int, servers ...string) string {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "      - address: %s\n", s)
	}
	return fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    passive: {disable: true}
    replayOnReset: %v
    replayBytes: %d
    servers:
%s`, on, bytes, b.String())
}

// The client speaks first (the usual case: a request); the good server
// greets once it has read the client's bytes (record), then echoes.
func TestReplayOnReset(t *testing.T) {
	tests := []struct {
		name      string
		on        bool
		greet     bool // the resetting server answers before it resets
		send      int  // bytes the client sends first
		wantSaved bool
	}{
		{"replayed", true, false, 100, true},
		{"off by default", false, false, 100, false},
		{"more than replayBytes", true, false, 5000, false},
		{"server answered first", true, true, 100, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := startResetter(t, tt.greet)
			good := startBackend(t, "good")
			good.record.Store(true)
			s := startLB(t, replayConfig(tt.on, 4096, bad.addr, good.addr))
			a := addr(t, s, "web")
			saved, failed := 0, 0
			for range 4 { // round robin: some go to the resetter first
				c, err := net.Dial("tcp", a)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				msg := strings.Repeat("x", tt.send-1) + "\n"
				if _, err := io.WriteString(c, msg); err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				if err == nil && line == "good\n" {
					saved++
				} else {
					failed++
				}
				c.Close()
			}
			st := s.Status().Backends[0].Servers
			if tt.wantSaved {
				if failed != 0 || saved != 4 {
					t.Errorf("%d of 4 connections failed, want none (replayed on the good server)", failed)
				}
				if st[0].ResetEmpty == 0 || st[1].Replayed != st[0].ResetEmpty {
					t.Errorf("resetBeforeReply = %d on the resetter, replayed = %d on the good server; want the same, not 0", st[0].ResetEmpty, st[1].Replayed)
				}
				// A reset is no connect error, and the replayed bytes
				// count in the good server's bytes-in: it got all four
				// clients' bytes (the accounting may trail the greeting).
				if st[0].ConnectErrors != 0 {
					t.Errorf("connectErrors = %d on the resetter, want 0 (resets count as resetBeforeReply only)", st[0].ConnectErrors)
				}
				want := uint64(4 * tt.send)
				for end := time.Now().Add(time.Second); s.Status().Backends[0].Servers[1].BytesIn != want && time.Now().Before(end); {
					time.Sleep(5 * time.Millisecond)
				}
				if got := s.Status().Backends[0].Servers[1].BytesIn; got != want {
					t.Errorf("bytesIn = %d on the good server, want %d (replayed bytes included)", got, want)
				}
				// The good server got exactly what each client sent.
				for _, b := range good.firstBytes() {
					if string(b) != msg(tt.send) {
						t.Errorf("good server got %d bytes first, want the client's %d", len(b), tt.send)
					}
				}
			} else if failed != 2 || saved != 2 {
				t.Errorf("%d of 4 connections failed, want the 2 sent to the resetter", failed)
			}
			if want := uint64(2); !tt.wantSaved && !tt.greet && st[0].ResetEmpty != want {
				t.Errorf("resetBeforeReply = %d on the resetter, want %d", st[0].ResetEmpty, want)
			}
			if tt.greet && st[0].ResetEmpty != 0 {
				t.Errorf("resetBeforeReply = %d on a server that answered first, want 0", st[0].ResetEmpty)
			}
		})
	}
}

func msg(n int) string { return strings.Repeat("x", n-1) + "\n" }

// A refused connect ejects the server at once; the connection goes to the
// next server.
func TestRefusedConnectEjectsAtOnce(t *testing.T) {
	dead := closedAddr(t)
	good := startBackend(t, "good")
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    passive: {failures: 5, ejectFor: 1h}
    servers:
      - address: %s
      - address: %s
`, dead, good.addr))
	for range 2 { // round robin: one of them tries the refused server
		c := dial(t, addr(t, s, "web"))
		if got := c.hello(t); got != "good" {
			t.Fatalf("reached %q, want good", got)
		}
		c.Close()
	}
	if st := serverState(s, "app", dead); st != "ejected" {
		t.Errorf("refused server state = %s, want ejected after one refused connect", st)
	}
}

// hangingAddr returns the address of a listener whose accept queue is
// full (backlog 0, filled by dials never accepted): a connect to it hangs
// until its timeout, as to a server that stopped answering.
func hangingAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	for range 3 {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		if c, err := d.Dial("tcp", a); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return a
}

// While a replay dials a server that does not answer, the clients keep
// writing and then close: nothing may deadlock (closing a connection
// while its client-to-server direction is inside a write to the server),
// every connection ends, and Close returns.
func TestReplayCloseWhileRedispatching(t *testing.T) {
	bad := startResetter(t, false)
	hang := hangingAddr(t)
	yaml := strings.Replace(replayConfig(true, 4096, bad.addr, hang), "backends:", "timeouts: {connect: 300ms}\nbackends:", 1)
	s := startLB(t, yaml)
	a := addr(t, s, "web")
	var wg sync.WaitGroup
	var conns []net.Conn
	for range 6 {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 160 { // 2 bytes every 5 ms for about 0.8 s
				if _, err := c.Write([]byte("x\n")); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	var active int64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		active = 0
		for _, sv := range s.Status().Backends[0].Servers {
			active += sv.Active
		}
		if active == 0 || time.Now().After(deadline) {
			break
		}
	}
	if active != 0 {
		t.Errorf("%d connections still active 2s after their clients closed, want 0", active)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return within 2s")
	}
}

// The client keeps writing while the first server resets: the reset is
// often first seen by the write to the server (which clears it; the read
// then sees a plain EOF), and the connection must still be replayed.
func TestReplayWhileClientWrites(t *testing.T) {
	bad := startResetter(t, false)
	good := startBackend(t, "good")
	good.record.Store(true)
	s := startLB(t, replayConfig(true, 4096, bad.addr, good.addr))
	a := addr(t, s, "web")
	const conns = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", a)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 60 { // a byte a millisecond, longer than the resetter waits
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
					time.Sleep(time.Millisecond)
				}
				c.Write([]byte("\n"))
			}()
			line, err := bufio.NewReader(c).ReadString('\n')
			<-done
			if err != nil || line != "good\n" {
				mu.Lock()
				failed++
				mu.Unlock()
				t.Logf("connection %d: read %q, %v", i, line, err)
			}
		}()
	}
	wg.Wait()
	st := s.Status().Backends[0].Servers
	if failed != 0 {
		t.Errorf("%d of %d connections failed, want none (replayed on the good server)", failed, conns)
	}
	if st[0].ResetEmpty == 0 || st[1].Replayed != st[0].ResetEmpty {
		t.Errorf("resetBeforeReply = %d on the resetter, replayed = %d on the good server; want the same, not 0", st[0].ResetEmpty, st[1].Replayed)
	}
}

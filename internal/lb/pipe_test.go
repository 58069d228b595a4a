package lb

import (
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The raw calls must report the same errno values unix.Read/Write/Splice
// do, or pump's EAGAIN (wait on the poller) and EOF handling break.
func TestRawSyscallsOnNonBlockingPipes(t *testing.T) {
	newPipe := func() [2]int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
		return p
	}
	a, b := newPipe(), newPipe()
	buf := make([]byte, 16)
	if n, err := rawRead(a[0], buf); n != 0 || err != unix.EAGAIN {
		t.Errorf("read of an empty pipe: %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := rawSplice(a[0], b[1], 16); n != 0 || err != unix.EAGAIN {
		t.Errorf("splice from an empty pipe: %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := rawWrite(a[1], []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v; want 5, nil", n, err)
	}
	if n, err := rawSplice(a[0], b[1], 16); n != 5 || err != nil {
		t.Fatalf("splice: %d, %v; want 5, nil", n, err)
	}
	if n, err := rawRead(b[0], buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Errorf("read after splice: %q, %v; want \"hello\", nil", buf[:n], err)
	}
	if n, err := rawWrite(a[1], nil); n != 0 || err != nil {
		t.Errorf("empty write: %d, %v; want 0, nil", n, err)
	}
	unix.Close(a[1])
	a[1] = -1
	if n, err := rawRead(a[0], buf); n != 0 || err != nil {
		t.Errorf("read at EOF: %d, %v; want 0, nil", n, err)
	}
	if _, err := rawWrite(-1, []byte("x")); err != unix.EBADF {
		t.Errorf("write to a bad fd: %v; want EBADF", err)
	}
	if _, err := rawSplice(b[0], b[0], 1); err != unix.EINVAL && err != unix.EBADF && err != unix.EAGAIN {
		t.Errorf("splice from a pipe to its own read end: %v; want an errno", err)
	}
}

// A server that stops reading must not hold a connection forever: once
// the buffers fill and nothing moves for the idle timeout, the proxy ends
// it. (Either direction's timer may fire first: the blocked write's
// deadline, set lazily by pump, or the idle read of the other direction.)
func TestStalledServerEndsAfterIdle(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	held := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			held <- c // never read
		}
	}()
	t.Cleanup(func() {
		select {
		case c := <-held:
			c.Close()
		default:
		}
	})
	s := startLB(t, fmt.Sprintf(`
timeouts: {idle: 300ms}
tuning: {noPark: true}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers: [{address: %q}]
`, l.Addr().String()))
	c := dial(t, addr(t, s, "web"))
	start := time.Now()
	chunk := make([]byte, 64<<10)
	var last time.Time
	for {
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c.Write(chunk)
		if err == nil {
			last = time.Now()
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			if last.IsZero() {
				t.Fatal("no write went through")
			}
			if time.Since(last) > 3*time.Second {
				t.Fatal("connection still open 3s after the writes stalled; want it ended after the 300ms idle timeout")
			}
			continue
		}
		break // reset or broken pipe: the proxy closed it
	}
	// The client's last write can land in socket buffers after the proxy
	// last moved data, so only the start bounds the idle timeout.
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("closed %v after the connection started; want at least the 300ms idle timeout", d)
	}
	waitFor(t, "cleanup", 2*time.Second, func() bool { return s.Status().Frontends[0].Active == 0 })
}

package lb

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// replay is the state of a connection whose backend has replayOnReset:
// until the server sends its first byte, the client bytes sent to it are
// kept (up to a bound) so that, if the server resets the connection, they
// can be sent to another server and the client never notices.
//
// While a replay is possible, the client-to-server direction writes to the
// server holding mu, and the server-to-client direction swaps the backend
// socket holding mu; once active is false, no swap happens any more, so
// pc.backend and pc.sv are stable. gen counts swaps, so the
// client-to-server direction knows when to take the new socket.
type replay struct {
	mu     sync.Mutex
	active atomic.Bool
	gen    atomic.Int32
	buf    []byte
	max    int
	c2sEOF bool // the client half-closed: half-close the new server too
	closed bool // closeBoth ran
	tried  []*serverRT
}

// stop ends the replay window (the server answered, the client sent too
// much, or the data went through a pipe).
func (rp *replay) stop() {
	if rp.active.Load() {
		rp.mu.Lock()
		rp.active.Store(false)
		rp.buf = nil
		rp.mu.Unlock()
	}
}

// backendNow returns the connection's current server socket, for the
// client-to-server direction when gen moved.
func (pc *proxyConn) backendNow() *sock {
	pc.rp.mu.Lock()
	defer pc.rp.mu.Unlock()
	return pc.backend
}

// replaySend writes b to the server while the replay window is open and
// keeps a copy. It never waits: what it could not write (the server is
// not reading) closes the window, and the caller writes the rest the
// usual way to the socket returned. ok is false when the window was
// already closed (nothing written).
func (pc *proxyConn) replaySend(b []byte) (written int, to *sock, ok bool, err error) {
	rp := pc.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	to = pc.backend
	if !rp.active.Load() {
		return 0, to, false, nil
	}
	werr := to.rc.Write(func(fd uintptr) bool {
		for written < len(b) {
			m, e := rawWrite(int(fd), b[written:])
			if e == unix.EINTR {
				continue
			}
			if e != nil {
				if e != unix.EAGAIN {
					err = e
				}
				return true
			}
			written += m
		}
		return true
	})
	if werr != nil && err == nil {
		err = werr
	}
	if written > 0 {
		pc.account(true, written)
		pc.touch()
	}
	if err != nil || written < len(b) || len(rp.buf)+written > rp.max {
		rp.active.Store(false)
		rp.buf = nil
	} else {
		rp.buf = append(rp.buf, b...)
	}
	return written, to, true, err
}

// redispatch is called by the server-to-client direction when the server
// reset the connection before sending a byte. If the replay window is
// still open it sends the kept bytes to another server and swaps the
// connection over; it returns the new server socket, or nil (the caller
// fails the connection as before).
func (pc *proxyConn) redispatch() *sock {
	rp := pc.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if !rp.active.Load() || rp.closed {
		return nil
	}
	s := pc.srv
	old := pc.sv
	old.dialFailed(s, unix.ECONNRESET)
	rp.tried = append(rp.tried, old)
	for len(rp.tried) < len(pc.bk.servers) {
		sv := pc.bk.pick(pc.src, rp.tried)
		if sv == nil {
			break
		}
		nb, err := dialRaw(&sv.raddr, pc.connectTO)
		if err == nil {
			nb.SetWriteDeadline(time.Now().Add(pc.connectTO))
			if _, err = nb.Write(rp.buf); err == nil && rp.c2sEOF {
				err = nb.closeWrite()
			}
			nb.SetWriteDeadline(time.Time{})
			if err != nil {
				nb.Close()
			}
		}
		if err != nil {
			sv.dialFailed(s, err)
			rp.tried = append(rp.tried, sv)
			continue
		}
		sv.dialOK()
		s.logger().Debug("server reset before answering: replayed on another server", "backend", pc.bk.name, "from", old.addr, "to", sv.addr, "bytes", len(rp.buf))
		oldSock := pc.backend
		pc.backend = nb
		old.untrack(pc)
		old.active.Add(-1)
		sv.conns.Add(1)
		sv.active.Add(1)
		sv.track(pc)
		sv.replayed.Add(1)
		pc.sv = sv
		rp.gen.Add(1)
		oldSock.Close()
		nb.SetReadDeadline(pc.readDeadline(time.Now()))
		return nb
	}
	rp.active.Store(false)
	rp.buf = nil
	return nil
}

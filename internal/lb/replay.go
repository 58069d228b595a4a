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
// socket holding mu. mu is held only for moments, never across a dial, a
// write that may wait or a close (see redispatch and closeBoth): the
// client-to-server direction takes it inside a read on the client socket.
// Once active is false, no swap happens any more, so pc.backend and pc.sv
// are stable. gen counts swaps, so the client-to-server direction knows
// when to take the new socket.
type replay struct {
	mu     sync.Mutex
	active atomic.Bool
	gen    atomic.Int32
	buf    []byte
	max    int
	c2sEOF bool        // the client half-closed: half-close the new server too
	closed bool        // closeBoth ran
	reset  bool        // a write to the current server saw it reset
	tried  []*serverRT // only the server-to-client direction uses it
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
//
// A reset first seen here (ECONNRESET) is no error while the window is
// open: the bytes are kept, as written, and reset is set, so the
// server-to-client direction, which then reads a plain EOF, replays them
// (see sawReset). EPIPE (the other direction met the reset first, or the
// server closed cleanly and then reset what followed) keeps the bytes
// too, but sets nothing: that direction decides, from what it read.
func (pc *proxyConn) replaySend(b []byte) (written int, to *sock, ok bool, err error) {
	rp := pc.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	to = pc.backend
	if !rp.active.Load() {
		return 0, to, false, nil
	}
	if !rp.reset {
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
		if err == unix.ECONNRESET {
			rp.reset = true
		}
	}
	if rp.reset || err == unix.EPIPE {
		err = nil
		// Keep the rest: counted as the client's now, as the new
		// server's when replayed.
		if len(rp.buf)+len(b) > rp.max {
			err = unix.ECONNRESET // too much to keep: fail as a reset
		} else {
			pc.fe.bytesIn.Add(uint64(len(b) - written))
			pc.touch()
			written = len(b)
		}
	}
	if err != nil || written < len(b) || len(rp.buf)+written > rp.max {
		rp.active.Store(false)
		rp.buf = nil
	} else {
		rp.buf = append(rp.buf, b...)
	}
	return written, to, true, err
}

// sawReset is asked by the server-to-client direction when the server
// closed before answering: it reports whether a write to the server saw a
// reset first. If not, the server closed cleanly, and the window closes
// (there is no reset to replay, and nobody to replay the bytes kept).
func (rp *replay) sawReset() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.reset {
		return true
	}
	rp.active.Store(false)
	rp.buf = nil
	return false
}

// redispatch is called by the server-to-client direction when the server
// reset the connection before sending a byte. If the replay window is
// still open it sends the kept bytes to another server and swaps the
// connection over; it returns the new server socket, or nil (the caller
// fails the connection as before).
//
// mu is never held across the dial or a write that may wait: the
// client-to-server direction takes mu inside a read on the client socket,
// and closeBoth's close of that socket waits for the read to end. The
// kept bytes go to the new socket (nobody else sees it yet) unlocked;
// then mu is taken to look for bytes the client sent meanwhile, which are
// sent unlocked too, until mu finds nothing left: only then, still under
// mu, is the socket swapped in.
func (pc *proxyConn) redispatch() *sock {
	rp := pc.rp
	rp.mu.Lock()
	if !rp.active.Load() || rp.closed {
		rp.mu.Unlock()
		return nil
	}
	s := pc.srv
	old := pc.sv
	old.failed(s, unix.ECONNRESET) // toward ejection; the caller counted the reset
	rp.mu.Unlock()
	rp.tried = append(rp.tried, old)
	for len(rp.tried) < len(pc.bk.servers) {
		sv := pc.bk.pick(pc.src, rp.tried)
		if sv == nil {
			break
		}
		nb, err := dialRaw(&sv.raddr, pc.connectTO)
		if err == nil {
			var swapped bool
			swapped, err = pc.replayTo(nb, sv)
			if err == nil {
				if !swapped {
					nb.Close() // the window closed meanwhile
					return nil
				}
				sv.dialOK()
				s.logger().Debug("server reset before answering: replayed on another server", "backend", pc.bk.name, "from", old.addr, "to", sv.addr)
				nb.SetReadDeadline(pc.readDeadline(time.Now()))
				return nb
			}
			nb.Close()
		}
		sv.dialFailed(s, err)
		rp.tried = append(rp.tried, sv)
	}
	rp.mu.Lock()
	rp.active.Store(false)
	rp.buf = nil
	rp.mu.Unlock()
	return nil
}

// replayTo sends the kept bytes (and the client's half-close) to nb, a
// new connection to sv, and swaps it in. swapped is false, with no error,
// when the window closed or the connection was closed meanwhile.
func (pc *proxyConn) replayTo(nb *sock, sv *serverRT) (swapped bool, err error) {
	rp := pc.rp
	sent, shut := 0, false
	nb.SetWriteDeadline(time.Now().Add(pc.connectTO))
	defer nb.SetWriteDeadline(time.Time{})
	for {
		rp.mu.Lock()
		if rp.closed || !rp.active.Load() {
			rp.mu.Unlock()
			return false, nil
		}
		if sent == len(rp.buf) && shut == rp.c2sEOF {
			break // mu held: swap
		}
		// Bytes up to len(rp.buf) never change: the client-to-server
		// direction only appends, and a window that closes drops the
		// slice, not its contents.
		rest, eof := rp.buf[sent:], rp.c2sEOF
		rp.mu.Unlock()
		if len(rest) > 0 {
			n, err := nb.Write(rest)
			sent += n
			if err != nil {
				return false, err
			}
		}
		if eof && !shut {
			if err := nb.closeWrite(); err != nil {
				return false, err
			}
			shut = true
		}
	}
	old := pc.sv
	oldSock := pc.backend
	pc.backend = nb
	old.untrack(pc)
	old.active.Add(-1)
	sv.conns.Add(1)
	sv.active.Add(1)
	sv.track(pc)
	sv.replayed.Add(1)
	sv.bytesIn.Add(uint64(sent)) // the client's bytes: the frontend counted them
	pc.sv = sv
	rp.reset = false
	rp.gen.Add(1)
	rp.mu.Unlock()
	oldSock.Close()
	return true, nil
}

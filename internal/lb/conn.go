package lb

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/homelab-dev/homelab/internal/lb/proxyproto"
	"github.com/homelab-dev/homelab/internal/lb/sni"
)

// proxyConn is one client connection bound to one backend server.
type proxyConn struct {
	srv      *Balancer
	fe       *frontendStats
	sv       *serverRT
	client   *sock
	backend  *sock
	src      netip.Addr // client address used by the limits
	idle     time.Duration
	noSplice bool

	parkAfter time.Duration

	lastActive atomic.Int64 // unix nanoseconds
	done       atomic.Int32 // directions finished
	parkedMask atomic.Int32 // 1: server to client parked, 2: client to server
	parkedIDs  [2]int32     // parker ids by direction; guarded by parker.mu
	aborted    atomic.Bool
	closeOnce  sync.Once

	bk        *backendRT    // for a replay's new server
	connectTO time.Duration // connect timeout, for a replay
	rp        *replay       // nil unless the backend has replayOnReset
	replied   bool          // the server sent a byte (server-to-client direction only)
}

func (pc *proxyConn) touch() { pc.lastActive.Store(time.Now().UnixNano()) }

func (pc *proxyConn) account(toBackend bool, n int) {
	if toBackend {
		pc.fe.bytesIn.Add(uint64(n))
		pc.sv.bytesIn.Add(uint64(n))
	} else {
		pc.fe.bytesOut.Add(uint64(n))
		pc.sv.bytesOut.Add(uint64(n))
	}
}

// deadlineAction is what a direction does when its wait times out.
type deadlineAction int

const (
	keepWaiting deadlineAction = iota
	park
	end
)

// onDeadline is called when a direction's deadline fires. If the
// connection moved data (either way) within the idle timeout it pushes
// the deadline out; a reading direction idle for parkAfter parks (its
// goroutine ends, the parker watches the socket).
func (pc *proxyConn) onDeadline(c deadliner, read bool) deadlineAction {
	last := time.Unix(0, pc.lastActive.Load())
	idleFor := time.Since(last)
	if idleFor >= pc.idle || pc.aborted.Load() {
		return end
	}
	next := last.Add(pc.idle)
	if read {
		if pc.parkAfter > 0 {
			if idleFor >= pc.parkAfter {
				return park
			}
			if p := last.Add(pc.parkAfter); p.Before(next) {
				next = p
			}
		}
		c.SetReadDeadline(next)
	} else {
		c.SetWriteDeadline(next)
	}
	return keepWaiting
}

// readDeadline is when a reading direction should next wake up.
func (pc *proxyConn) readDeadline(now time.Time) time.Time {
	if pc.parkAfter > 0 && pc.parkAfter < pc.idle {
		return now.Add(pc.parkAfter)
	}
	return now.Add(pc.idle)
}

// abort closes both sockets at once (drain timeout, shutdown).
func (pc *proxyConn) abort() {
	pc.aborted.Store(true)
	pc.closeBoth()
}

// closeBoth closes both sockets; directions parked on them are ended.
func (pc *proxyConn) closeBoth() {
	first := false
	pc.closeOnce.Do(func() {
		first = true
		b := pc.backend
		if rp := pc.rp; rp != nil {
			// Hold mu only to end the window and read the socket: a
			// close waits for the operations in flight on the socket,
			// and the client-to-server direction takes mu inside one
			// (the client's read). No swap happens once closed is set.
			rp.mu.Lock()
			rp.closed = true
			rp.active.Store(false)
			b = pc.backend
			rp.mu.Unlock()
		}
		pc.client.Close()
		b.Close()
	})
	// Outside Do: kick finishes parked directions, which calls closeBoth.
	if first && pc.parkedMask.Load() != 0 {
		pc.srv.parker.kick(pc)
	}
}

// run carries the client-to-server direction on the calling goroutine and
// starts one for the other; fewer goroutines at a burst's peak means less
// memory the runtime keeps afterwards. (The caller's stack, grown through
// the handshake and dial, is freed when the direction parks.) The last
// direction to finish cleans up.
func (pc *proxyConn) run() {
	now := time.Now()
	pc.touch()
	pc.client.SetReadDeadline(pc.readDeadline(now))
	pc.backend.SetReadDeadline(pc.readDeadline(now))
	// Write deadlines are set by pump when a write first has to wait.
	pc.srv.wg.Add(2)
	go pc.direction(false, false)
	pc.direction(true, false)
}

// direction runs one direction (toBackend: client to server) until it
// ends or parks. resumed is true when the parker restarts it.
func (pc *proxyConn) direction(toBackend, resumed bool) {
	defer pc.srv.wg.Done()
	var b *sock
	if pc.rp != nil {
		b = pc.backendNow() // a replay may swap it concurrently
	} else {
		b = pc.backend
	}
	src, dst := b.rc, pc.client.rc
	srcConn, dstConn := deadliner(b), deadliner(pc.client)
	if toBackend {
		src, dst = dst, src
		srcConn, dstConn = dstConn, srcConn
	}
	if resumed {
		if err := pc.srv.parker.unregister(src); err != nil {
			pc.finish(err, toBackend)
			return
		}
		srcConn.SetReadDeadline(pc.readDeadline(time.Now()))
	}
	err := pc.pump(src, dst, srcConn, dstConn, toBackend)
	if err == errParked {
		return
	}
	pc.finish(err, toBackend)
}

// finish ends one direction: on error both sockets close, on EOF the
// other side's write half. The second direction to finish cleans up.
func (pc *proxyConn) finish(err error, toBackend bool) {
	if err != nil {
		pc.closeBoth() // first: no replay can swap the server after it
		if !pc.aborted.Load() && !isClosed(err) && !errors.Is(err, errDeadline) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			pc.srv.logger().Debug("connection error", "backend", pc.sv.backend, "server", pc.sv.addr, "err", err)
		}
	} else if pc.done.Load() == 0 {
		// Pass the half-close on. When the other direction is already
		// done, closing both (below) sends the FIN: one syscall fewer.
		if toBackend {
			if rp := pc.rp; rp != nil {
				rp.mu.Lock()
				rp.c2sEOF = true
				pc.backend.closeWrite()
				rp.mu.Unlock()
			} else {
				pc.backend.closeWrite()
			}
		} else {
			pc.client.closeWrite()
		}
	}
	if pc.done.Add(1) == 2 {
		pc.closeBoth()
		pc.sv.untrack(pc)
		pc.sv.active.Add(-1)
		pc.fe.active.Add(-1)
		pc.srv.sources.release(pc.src)
		pc.srv.capacity.release()
	}
}

// handshakeBufs hold the bytes read before a server is chosen (PROXY
// header, ClientHello); they are returned as soon as those are forwarded.
var handshakeBufs = sync.Pool{New: func() any { b := make([]byte, sni.MaxHello+1024); return &b }}

// reject reasons, as exported in metrics.
const (
	rejDenied     = "denied"
	rejUntrusted  = "untrusted_proxy"
	rejBadProxy   = "bad_proxy_header"
	rejSourceConn = "source_connections"
	rejSourceRate = "source_rate"
	rejHandshake  = "handshake"
	rejNoRoute    = "no_route"
	rejNoServer   = "no_server"
)

// handle takes an accepted client connection (fd, from client) through
// admission, routing and the dial, then proxies it. It owns fd and one
// slot of the global cap.
func (s *Balancer) handle(l *listener, fd int, client netip.AddrPort) {
	fe := l.fe.Load()
	st := s.state.Load()
	c, err := newSock(fd)
	if err != nil {
		s.capacity.release()
		return
	}
	s.pendingMu.Lock()
	if s.closed.Load() {
		s.pendingMu.Unlock()
		c.Close()
		s.capacity.release()
		return
	}
	s.pending[c] = struct{}{}
	s.pendingMu.Unlock()
	pending := true
	unpend := func() {
		if pending {
			pending = false
			s.pendingMu.Lock()
			delete(s.pending, c)
			s.pendingMu.Unlock()
		}
	}
	defer unpend()
	released := false
	release := func() {
		if !released {
			released = true
			s.capacity.release()
		}
	}
	defer func() {
		if !released {
			c.Close()
			release()
		}
	}()
	stats := fe.stats
	stats.accepted.Add(1)
	var local netip.AddrPort // asked for only when a PROXY header needs it
	haveLocal := false
	to := st.cfg.Timeouts

	var hb *[]byte
	var buf []byte // bytes read ahead, to forward to the server
	defer func() {
		if hb != nil {
			handshakeBufs.Put(hb)
		}
	}()
	readMore := func() error {
		if hb == nil {
			hb = handshakeBufs.Get().(*[]byte)
			buf = (*hb)[:0]
		}
		if len(buf) == cap(buf) {
			return errors.New("handshake too large")
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			return nil
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if fe.acceptProxy || fe.needSNI {
		c.SetReadDeadline(time.Now().Add(to.Handshake.D()))
	}
	if fe.acceptProxy {
		if !prefixesContain(fe.cfg.AcceptProxy.Trusted, client.Addr()) {
			stats.reject(rejUntrusted)
			return
		}
		for {
			h, n, err := proxyproto.Parse(buf)
			if err == proxyproto.ErrIncomplete {
				if err := readMore(); err != nil {
					stats.reject(rejHandshake)
					return
				}
				continue
			}
			if err != nil {
				stats.reject(rejBadProxy)
				s.logger().Debug("bad PROXY header", "frontend", fe.cfg.Name, "from", client, "err", err)
				return
			}
			if !h.Local {
				client, local, haveLocal = h.Src, h.Dst, true
			}
			buf = buf[n:]
			break
		}
	}
	src := client.Addr()
	if !fe.admits(src) {
		stats.reject(rejDenied)
		return
	}
	switch s.sources.acquire(src, &st.cfg.Limits, time.Now()) {
	case overConnections:
		stats.reject(rejSourceConn)
		return
	case overRate:
		stats.reject(rejSourceRate)
		return
	}
	srcReleased := false
	releaseSrc := func() {
		if !srcReleased {
			srcReleased = true
			s.sources.release(src)
		}
	}
	defer releaseSrc()

	if fe.acceptProxy || fe.needSNI {
		// The handshake took time: route with the newest config.
		if nf := l.fe.Load(); nf != fe && nf.needSNI == fe.needSNI && nf.acceptProxy == fe.acceptProxy {
			fe = nf
		}
	}
	bk := fe.def
	if fe.needSNI {
		for {
			name, err := sni.ServerName(buf)
			if err == sni.ErrIncomplete {
				if err := readMore(); err != nil {
					stats.reject(rejHandshake)
					return
				}
				continue
			}
			if err == nil {
				if b := fe.route(name); b != nil {
					bk = b
				}
			}
			break
		}
	}
	if fe.acceptProxy || fe.needSNI {
		c.SetReadDeadline(time.Time{})
	}
	if bk == nil {
		stats.reject(rejNoRoute)
		return
	}

	// Dial, moving on to the next server when one fails.
	var triedBuf [8]*serverRT
	tried := triedBuf[:0]
	var bc *sock
	var sv *serverRT
	for attempt := 0; attempt < len(bk.servers); attempt++ {
		sv = bk.pick(src, tried)
		if sv == nil {
			break
		}
		conn, err := dialRaw(&sv.raddr, to.Connect.D())
		if err == nil {
			sv.dialOK()
			bc = conn
			break
		}
		sv.dialFailed(s, err)
		s.logger().Debug("connect failed, trying next server", "backend", bk.name, "server", sv.addr, "err", err)
		tried = append(tried, sv)
		sv = nil
	}
	if bc == nil {
		stats.reject(rejNoServer)
		bk.noServ.Add(1)
		return
	}

	// PROXY header and bytes read ahead go first, in one write.
	var pre []byte
	if bk.cfg.ProxyProtocol != "" && !haveLocal {
		local = c.localAddr()
	}
	switch bk.cfg.ProxyProtocol {
	case "v1":
		pre = proxyproto.AppendV1(make([]byte, 0, proxyproto.MaxV1Len+len(buf)), client, local)
	case "v2":
		pre = proxyproto.AppendV2(make([]byte, 0, 52+len(buf)), client, local)
	}
	pre = append(pre, buf...)
	if hb != nil {
		handshakeBufs.Put(hb)
		hb, buf = nil, nil
	}
	if len(pre) > 0 {
		bc.SetWriteDeadline(time.Now().Add(to.Connect.D()))
		if _, err := bc.Write(pre); err != nil {
			bc.Close()
			sv.connectErrs.Add(1)
			stats.reject(rejNoServer)
			return
		}
	}
	pc := &proxyConn{srv: s, fe: stats, sv: sv, client: c, backend: bc, src: src, idle: to.Idle.D(), noSplice: st.cfg.Tuning.NoSplice}
	if !st.cfg.Tuning.NoPark {
		pc.parkAfter = st.cfg.Tuning.ParkAfter.D()
	}
	if bk.cfg.ReplayOnReset && len(pre) <= bk.cfg.ReplayBytes {
		pc.bk, pc.connectTO = bk, to.Connect.D()
		pc.rp = &replay{max: bk.cfg.ReplayBytes, tried: append([]*serverRT(nil), tried...)}
		pc.rp.buf = append(pc.rp.buf, pre...)
		pc.rp.active.Store(true)
	}
	sv.conns.Add(1)
	sv.active.Add(1)
	stats.active.Add(1)
	sv.track(pc)
	if sv.drained.Load() || s.isClosed() {
		// The drain timer fired (or we are closing) while we dialed.
		pc.abort()
	}
	released = true
	srcReleased = true
	unpend() // tracked by its server from now on
	pc.run()
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// matchSNI reports whether name matches pattern: exact, or "*.suffix"
// matching one or more labels before suffix.
func matchSNI(pattern, name string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
	}
	return pattern == name
}

package lb

import (
	"context"
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
	client   *net.TCPConn
	backend  *net.TCPConn
	src      netip.Addr // client address used by the limits
	idle     time.Duration
	noSplice bool

	lastActive atomic.Int64 // unix nanoseconds
	done       atomic.Int32 // directions finished
	aborted    atomic.Bool
	closeOnce  sync.Once
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

// stillActive is called when a deadline fires: if the connection moved
// data (either way) within the idle timeout, it pushes the deadline out and
// says to keep waiting.
func (pc *proxyConn) stillActive(c deadliner, read bool) bool {
	last := time.Unix(0, pc.lastActive.Load())
	if time.Since(last) >= pc.idle || pc.aborted.Load() {
		return false
	}
	if read {
		c.SetReadDeadline(last.Add(pc.idle))
	} else {
		c.SetWriteDeadline(last.Add(pc.idle))
	}
	return true
}

// abort closes both sockets at once (drain timeout, shutdown).
func (pc *proxyConn) abort() {
	pc.aborted.Store(true)
	pc.closeBoth()
}

func (pc *proxyConn) closeBoth() {
	pc.closeOnce.Do(func() {
		pc.client.Close()
		pc.backend.Close()
	})
}

// run starts one goroutine per direction. The last to finish cleans up.
func (pc *proxyConn) run(clientRaw, backendRaw syscall.RawConn, release func()) {
	deadline := time.Now().Add(pc.idle)
	pc.touch()
	pc.client.SetDeadline(deadline)
	pc.backend.SetDeadline(deadline)
	finish := func(err error, toBackend bool) {
		if err != nil {
			if !pc.aborted.Load() && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errDeadline) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				pc.srv.logger().Debug("connection error", "backend", pc.sv.backend, "server", pc.sv.addr, "err", err)
			}
			pc.closeBoth()
		} else if toBackend {
			pc.backend.CloseWrite()
		} else {
			pc.client.CloseWrite()
		}
		if pc.done.Add(1) == 2 {
			pc.closeBoth()
			pc.sv.untrack(pc)
			pc.sv.active.Add(-1)
			pc.fe.active.Add(-1)
			release()
		}
	}
	// Both directions run on fresh goroutines: their stacks stay small,
	// while the accepting goroutine's grew through the handshake and dial
	// and is freed now.
	pc.srv.wg.Add(2)
	go func() {
		defer pc.srv.wg.Done()
		finish(pc.pump(backendRaw, clientRaw, pc.backend, pc.client, false), false)
	}()
	go func() {
		defer pc.srv.wg.Done()
		finish(pc.pump(clientRaw, backendRaw, pc.client, pc.backend, true), true)
	}()
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

// handle takes an accepted client connection through admission, routing
// and the dial, then proxies it. It owns c and one slot of the global cap.
func (s *Balancer) handle(l *listener, c *net.TCPConn) {
	fe := l.fe.Load()
	st := s.state.Load()
	s.pendingMu.Lock()
	if s.closed.Load() {
		s.pendingMu.Unlock()
		c.Close()
		s.capacity.release()
		return
	}
	s.pending[c] = struct{}{}
	s.pendingMu.Unlock()
	defer func() {
		s.pendingMu.Lock()
		delete(s.pending, c)
		s.pendingMu.Unlock()
	}()
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
	client := addrPort(c.RemoteAddr())
	local := addrPort(c.LocalAddr())
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
				client, local = h.Src, h.Dst
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
	var bc *net.TCPConn
	var sv *serverRT
	for attempt := 0; attempt < len(bk.servers); attempt++ {
		sv = bk.pick(src, tried)
		if sv == nil {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), to.Connect.D())
		conn, err := s.dialer.DialContext(ctx, "tcp", sv.addr)
		cancel()
		if err == nil {
			sv.dialOK()
			bc = conn.(*net.TCPConn)
			break
		}
		sv.dialFailed(s)
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
	clientRaw, err1 := c.SyscallConn()
	backendRaw, err2 := bc.SyscallConn()
	if err1 != nil || err2 != nil {
		bc.Close()
		return
	}
	pc := &proxyConn{srv: s, fe: stats, sv: sv, client: c, backend: bc, src: src, idle: to.Idle.D(), noSplice: st.cfg.Tuning.NoSplice}
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
	pc.run(clientRaw, backendRaw, func() {
		s.sources.release(src)
		s.capacity.release()
	})
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

package lb

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// udpFrontend forwards datagrams: each client address gets a flow, a
// connected socket to one server, forgotten after the UDP idle timeout.
type udpFrontend struct {
	s    *Balancer
	l    *listener
	conn *net.UDPConn

	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow
	done  chan struct{}
}

type udpFlow struct {
	f      *udpFrontend
	client netip.AddrPort
	sv     *serverRT
	stats  *frontendStats
	conn   *net.UDPConn
	last   atomic.Int64
	idle   time.Duration
	once   sync.Once
}

var udpBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func newUDPFrontend(s *Balancer, l *listener, c *net.UDPConn) *udpFrontend {
	return &udpFrontend{s: s, l: l, conn: c, flows: map[netip.AddrPort]*udpFlow{}, done: make(chan struct{})}
}

func (f *udpFrontend) close() {
	select {
	case <-f.done:
		return
	default:
	}
	close(f.done)
	f.conn.Close()
	f.mu.Lock()
	flows := make([]*udpFlow, 0, len(f.flows))
	for _, fl := range f.flows {
		flows = append(flows, fl)
	}
	f.mu.Unlock()
	for _, fl := range flows {
		fl.end()
	}
}

func (f *udpFrontend) run() {
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		fe := f.l.fe.Load()
		fe.stats.packetsIn.Add(1)
		f.mu.Lock()
		fl := f.flows[from]
		f.mu.Unlock()
		if fl == nil {
			fl = f.newFlow(fe, from)
			if fl == nil {
				continue
			}
		}
		fl.last.Store(time.Now().UnixNano())
		if _, err := fl.conn.Write(buf[:n]); err == nil {
			fe.stats.bytesIn.Add(uint64(n))
			fl.sv.bytesIn.Add(uint64(n))
		}
	}
}

func (f *udpFrontend) newFlow(fe *frontendRT, from netip.AddrPort) *udpFlow {
	s := f.s
	st := s.state.Load()
	if !fe.admits(from.Addr()) {
		fe.stats.reject(rejDenied)
		return nil
	}
	switch s.sources.acquire(from.Addr(), &st.cfg.Limits, time.Now()) {
	case overConnections:
		fe.stats.reject(rejSourceConn)
		return nil
	case overRate:
		fe.stats.reject(rejSourceRate)
		return nil
	}
	bk := fe.def
	var tried []*serverRT
	for range len(bk.servers) {
		sv := bk.pick(from.Addr(), tried)
		if sv == nil {
			break
		}
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(sv.ap))
		if err != nil {
			sv.dialFailed(s, err)
			tried = append(tried, sv)
			continue
		}
		fl := &udpFlow{f: f, client: from, sv: sv, stats: fe.stats, conn: c, idle: st.cfg.Timeouts.UDPIdle.D()}
		fl.last.Store(time.Now().UnixNano())
		sv.conns.Add(1)
		sv.active.Add(1)
		fe.stats.accepted.Add(1)
		fe.stats.active.Add(1)
		f.mu.Lock()
		f.flows[from] = fl
		f.mu.Unlock()
		sv.trackFlow(fl)
		if sv.drained.Load() {
			fl.end() // the drain timer fired while we dialed
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			fl.replies()
		}()
		return fl
	}
	s.sources.release(from.Addr())
	fe.stats.reject(rejNoServer)
	bk.noServ.Add(1)
	return nil
}

// replies carries the server's datagrams back to the client, holding a
// buffer only while one is in hand.
func (fl *udpFlow) replies() {
	defer fl.end()
	raw, err := fl.conn.SyscallConn()
	if err != nil {
		return
	}
	fl.conn.SetReadDeadline(time.Now().Add(fl.idle))
	for {
		var bp *[]byte
		var n int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			bp = udpBufs.Get().(*[]byte)
			n, rerr = unix.Read(int(fd), *bp)
			if rerr == unix.EAGAIN {
				udpBufs.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		if err != nil {
			if errors.Is(err, errDeadline) {
				last := time.Unix(0, fl.last.Load())
				if time.Since(last) < fl.idle {
					fl.conn.SetReadDeadline(last.Add(fl.idle))
					continue
				}
			}
			return
		}
		if rerr != nil {
			if bp != nil {
				udpBufs.Put(bp)
			}
			if rerr == unix.ECONNREFUSED {
				continue // ICMP unreachable from the server: keep the flow
			}
			return
		}
		fl.last.Store(time.Now().UnixNano())
		if _, err := fl.f.conn.WriteToUDPAddrPort((*bp)[:n], fl.client); err == nil {
			fl.stats.packetsOut.Add(1)
			fl.stats.bytesOut.Add(uint64(n))
			fl.sv.bytesOut.Add(uint64(n))
		}
		udpBufs.Put(bp)
	}
}

func (fl *udpFlow) end() {
	fl.once.Do(func() {
		fl.conn.Close()
		fl.f.mu.Lock()
		if fl.f.flows[fl.client] == fl {
			delete(fl.f.flows, fl.client)
		}
		fl.f.mu.Unlock()
		fl.sv.untrackFlow(fl)
		fl.sv.active.Add(-1)
		fl.stats.active.Add(-1)
		fl.f.s.sources.release(fl.client.Addr())
	})
}

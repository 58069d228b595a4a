package lb

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// serverRT is one backend server at run time. It survives reloads that
// keep its backend name and address, so its health, counters and
// connections carry over.
type serverRT struct {
	backend string
	addr    string
	ap      netip.AddrPort
	raddr   rawAddr // ap in the kernel's layout, for connect(2)

	weight   atomic.Int64
	disabled atomic.Bool
	passive  atomic.Pointer[Passive]

	up           atomic.Bool  // active health state (true without checks)
	ejectedUntil atomic.Int64 // unix nanoseconds; passive ejection
	consecFails  atomic.Int32
	draining     atomic.Bool
	drained      atomic.Bool // drain timer fired

	active      atomic.Int64
	conns       atomic.Uint64
	bytesIn     atomic.Uint64 // client to server
	bytesOut    atomic.Uint64 // server to client
	connectErrs atomic.Uint64
	resetEmpty  atomic.Uint64 // connections the server reset before sending a byte
	replayed    atomic.Uint64 // connections replayed here after another server reset them
	ejections   atomic.Uint64

	checksOK     atomic.Uint64
	checksFailed atomic.Uint64
	checkLastNs  atomic.Int64
	checkSumNs   atomic.Uint64

	mu        sync.Mutex
	live      map[*proxyConn]struct{}
	flows     map[*udpFlow]struct{}
	lastCheck string // last check error, "" when it passed
	check     *HealthCheck
	stopCheck context.CancelFunc
	drainTmr  *time.Timer
}

func newServerRT(backend string, s Server) *serverRT {
	ap, _ := netip.ParseAddrPort(s.Address)
	sv := &serverRT{backend: backend, addr: s.Address, ap: ap, raddr: newRawAddr(ap), live: map[*proxyConn]struct{}{}}
	sv.up.Store(true)
	return sv
}

// available reports whether new connections may go to sv.
func (sv *serverRT) available(now int64) bool {
	return !sv.disabled.Load() && sv.up.Load() && sv.ejectedUntil.Load() <= now && !sv.draining.Load()
}

// state names sv's state for status pages.
func (sv *serverRT) state(now int64) string {
	switch {
	case sv.draining.Load():
		return "draining"
	case sv.disabled.Load():
		return "disabled"
	case !sv.up.Load():
		return "down"
	case sv.ejectedUntil.Load() > now:
		return "ejected"
	}
	return "up"
}

// dialFailed counts a failed connect and ejects the server after enough
// failures in a row (see failed).
func (sv *serverRT) dialFailed(s *Balancer, err error) {
	sv.connectErrs.Add(1)
	sv.failed(s, err)
}

// failed counts a failure toward passive ejection: a failed connect or,
// with replayOnReset, a reset before the server's first byte (counted by
// the caller as resetEmpty, not as a connect error). The server is ejected
// after enough in a row; a refused connect (nothing listens: the server is
// down or restarting) ejects it at once: the next clients need not try it.
func (sv *serverRT) failed(s *Balancer, err error) {
	p := sv.passive.Load()
	n := sv.consecFails.Add(1)
	if p == nil || p.Disable || p.Failures <= 0 {
		return
	}
	refused := errors.Is(err, syscall.ECONNREFUSED)
	if int(n) < p.Failures && !refused {
		return
	}
	sv.consecFails.Store(0)
	now := time.Now()
	was := sv.ejectedUntil.Load()
	if was > now.UnixNano() || !sv.ejectedUntil.CompareAndSwap(was, now.Add(p.EjectFor.D()).UnixNano()) {
		return // already ejected (by a concurrent failed connect)
	}
	sv.ejections.Add(1)
	s.logger().Warn("server ejected after failed connections", "backend", sv.backend, "server", sv.addr, "failures", n, "refused", refused, "for", p.EjectFor.String())
}

func (sv *serverRT) dialOK() {
	if sv.consecFails.Load() != 0 {
		sv.consecFails.Store(0)
	}
}

func (sv *serverRT) track(pc *proxyConn) {
	sv.mu.Lock()
	sv.live[pc] = struct{}{}
	sv.mu.Unlock()
}

func (sv *serverRT) untrack(pc *proxyConn) {
	sv.mu.Lock()
	delete(sv.live, pc)
	sv.mu.Unlock()
}

func (sv *serverRT) trackFlow(fl *udpFlow) {
	sv.mu.Lock()
	if sv.flows == nil {
		sv.flows = map[*udpFlow]struct{}{}
	}
	sv.flows[fl] = struct{}{}
	sv.mu.Unlock()
}

func (sv *serverRT) untrackFlow(fl *udpFlow) {
	sv.mu.Lock()
	delete(sv.flows, fl)
	sv.mu.Unlock()
}

// closeConns force-closes every connection (and UDP flow) to sv.
func (sv *serverRT) closeConns() int {
	sv.mu.Lock()
	list := make([]*proxyConn, 0, len(sv.live))
	for pc := range sv.live {
		list = append(list, pc)
	}
	flows := make([]*udpFlow, 0, len(sv.flows))
	for fl := range sv.flows {
		flows = append(flows, fl)
	}
	sv.mu.Unlock()
	for _, pc := range list {
		pc.abort()
	}
	for _, fl := range flows {
		fl.end()
	}
	return len(list) + len(flows)
}

// backendRT is one generation of a backend: its servers in config order
// and the balancing state.
type backendRT struct {
	name    string
	cfg     Backend
	servers []*serverRT
	seq     []uint16 // smooth weighted round-robin order
	next    atomic.Uint64
	noServ  *atomic.Uint64 // connections refused for want of a server (kept across reloads)
}

func newBackendRT(cfg Backend, servers []*serverRT, noServ *atomic.Uint64) *backendRT {
	b := &backendRT{name: cfg.Name, cfg: cfg, servers: servers, noServ: noServ}
	b.seq = wrrSequence(servers)
	return b
}

// wrrSequence returns one cycle of smooth weighted round-robin (the order
// nginx uses: heavy servers spread out, not bunched).
func wrrSequence(servers []*serverRT) []uint16 {
	w := make([]int, len(servers))
	g, total := 0, 0
	for i, s := range servers {
		w[i] = max(1, int(s.weight.Load()))
		g = gcd(g, w[i])
	}
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	cur := make([]int, len(w))
	seq := make([]uint16, 0, total)
	for range total {
		best := 0
		for i := range w {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq = append(seq, uint16(best))
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// pick chooses a server for a new connection from client, skipping those
// in tried. When no server is available it falls back to any enabled one
// not yet tried: trying a server believed down beats refusing outright.
func (b *backendRT) pick(client netip.Addr, tried []*serverRT) *serverRT {
	now := time.Now().UnixNano()
	if sv := b.pickFrom(client, tried, func(sv *serverRT) bool { return sv.available(now) }); sv != nil {
		return sv
	}
	// A reload may have replaced this backend while the connection was
	// being accepted; its servers then drain but still serve.
	return b.pickFrom(client, tried, func(sv *serverRT) bool { return !sv.disabled.Load() && !sv.drained.Load() })
}

func isTried(sv *serverRT, tried []*serverRT) bool {
	for _, t := range tried {
		if t == sv {
			return true
		}
	}
	return false
}

func (b *backendRT) pickFrom(client netip.Addr, tried []*serverRT, ok func(*serverRT) bool) *serverRT {
	usable := func(sv *serverRT) bool { return ok(sv) && !isTried(sv, tried) }
	n := len(b.servers)
	if n == 0 {
		return nil
	}
	switch b.cfg.Balance {
	case BalanceLeastConn:
		start := int(b.next.Add(1) % uint64(n))
		var best *serverRT
		for i := range n {
			sv := b.servers[(start+i)%n]
			if !usable(sv) {
				continue
			}
			if best == nil || sv.active.Load()*best.weight.Load() < best.active.Load()*sv.weight.Load() {
				best = sv
			}
		}
		return best
	case BalanceP2C:
		var buf [32]*serverRT
		cand := buf[:0]
		for _, sv := range b.servers {
			if usable(sv) {
				cand = append(cand, sv)
			}
		}
		switch len(cand) {
		case 0:
			return nil
		case 1:
			return cand[0]
		}
		i := rand.IntN(len(cand))
		j := rand.IntN(len(cand) - 1)
		if j >= i {
			j++
		}
		a, c := cand[i], cand[j]
		if c.active.Load()*a.weight.Load() < a.active.Load()*c.weight.Load() {
			return c
		}
		return a
	case BalanceHash:
		// Rendezvous hashing: each client keeps its server while that
		// server stays; when it goes, only its clients move.
		ca := client.Unmap().As16()
		var best *serverRT
		bestScore := math.Inf(-1)
		for _, sv := range b.servers {
			if !usable(sv) {
				continue
			}
			h := hashPair(ca, sv.addr)
			u := (float64(h>>11) + 0.5) / (1 << 53) // in (0,1)
			score := float64(sv.weight.Load()) / -math.Log(u)
			if score > bestScore {
				best, bestScore = sv, score
			}
		}
		return best
	default: // round robin
		seq := b.seq
		if len(seq) == 0 {
			return nil
		}
		start := b.next.Add(1)
		for i := range uint64(len(seq)) {
			sv := b.servers[seq[(start+i)%uint64(len(seq))]]
			if usable(sv) {
				return sv
			}
		}
		return nil
	}
}

// hashPair is FNV-1a over the client address and server address, then a
// finalizer so nearby inputs spread; stable across restarts and hosts.
func hashPair(client [16]byte, server string) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range client {
		h ^= uint64(c)
		h *= 1099511628211
	}
	for i := 0; i < len(server); i++ {
		h ^= uint64(server[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Balancer is the load balancer daemon. Its zero value is ready: Run (or
// Start) applies Config, Reload swaps in a new one at run time, Close stops
// everything.
type Balancer struct {
	// Config is the configuration Start applies when Reload has not been
	// called before; nil means an empty one.
	Config *Config
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger

	mu        sync.Mutex // serializes Start, Reload, Close
	started   bool
	closed    atomic.Bool
	done      chan struct{}
	state     atomic.Pointer[state]
	listeners map[string]*listener
	servers   map[string]*serverRT // live servers by backend|address
	draining  map[*serverRT]struct{}
	feStats   map[string]*frontendStats
	noServ    map[string]*atomic.Uint64
	admin     *adminServer
	startTime time.Time
	reloads   atomic.Uint64
	reloadErr atomic.Uint64

	pipes    pipePool
	parker   parker
	capacity capLimiter
	sources  sourceLimiter

	pendingMu sync.Mutex
	pending   map[*sock]struct{} // accepted, not yet proxying
	wg        sync.WaitGroup     // accept loops, handlers, checks
}

// state is one applied configuration.
type state struct {
	cfg       *Config
	frontends []*frontendRT
	backends  map[string]*backendRT
	order     []string // backend names in config order
}

// frontendStats are a frontend's counters, kept across reloads by name.
type frontendStats struct {
	accepted atomic.Uint64
	active   atomic.Int64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	waited   atomic.Uint64 // accepts delayed by the global cap
	mu       sync.Mutex
	rejected map[string]uint64
	// UDP
	packetsIn, packetsOut atomic.Uint64
}

func (f *frontendStats) reject(reason string) {
	f.mu.Lock()
	if f.rejected == nil {
		f.rejected = map[string]uint64{}
	}
	f.rejected[reason]++
	f.mu.Unlock()
}

// frontendRT is one generation of a frontend.
type frontendRT struct {
	cfg         Frontend
	stats       *frontendStats
	def         *backendRT
	routes      []routeRT
	needSNI     bool
	acceptProxy bool
}

type routeRT struct {
	patterns []string
	backend  *backendRT
}

func (f *frontendRT) route(name string) *backendRT {
	if name == "" {
		return nil
	}
	for _, r := range f.routes {
		for _, p := range r.patterns {
			if matchSNI(p, name) {
				return r.backend
			}
		}
	}
	return nil
}

func (f *frontendRT) admits(a netip.Addr) bool {
	if prefixesContain(f.cfg.Deny, a) {
		return false
	}
	return len(f.cfg.Allow) == 0 || prefixesContain(f.cfg.Allow, a)
}

// listener is one bound socket; it outlives reloads that keep its address,
// and follows the frontend that now owns it.
type listener struct {
	key  string
	addr string
	fe   atomic.Pointer[frontendRT]
	tcp  *sock    // listening socket, accepted from with accept4
	tcpA net.Addr // its bound address
	udp  *udpFrontend
}

func (s *Balancer) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Balancer) isClosed() bool { return s.closed.Load() }

// Start binds the listeners of Config and starts serving in the background.
func (s *Balancer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return errors.New("load balancer is closed")
	}
	if s.started {
		return errors.New("load balancer already started")
	}
	cfg := s.Config
	if cfg == nil {
		cfg = &Config{}
		cfg.SetDefaults()
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("checking load balancer config: %w", err)
	}
	s.done = make(chan struct{})
	s.listeners = map[string]*listener{}
	s.servers = map[string]*serverRT{}
	s.draining = map[*serverRT]struct{}{}
	s.feStats = map[string]*frontendStats{}
	s.noServ = map[string]*atomic.Uint64{}
	s.startTime = time.Now()
	s.parker.s = s
	s.pending = map[*sock]struct{}{}
	if err := s.apply(cfg); err != nil {
		return err
	}
	s.started = true
	s.logger().Info("load balancer started", "frontends", len(cfg.Frontends), "backends", len(cfg.Backends))
	return nil
}

// Run starts the server (unless Start already did) and serves until ctx
// is done or Close is called. It returns nil after a clean stop.
func (s *Balancer) Run(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		if err := s.Start(); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	return s.Close()
}

// Close stops the listeners, the checks and every connection, and waits
// for them to end. It is safe to call more than once.
func (s *Balancer) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	if !s.started {
		s.mu.Unlock()
		return nil
	}
	close(s.done)
	for _, l := range s.listeners {
		l.close()
	}
	if s.admin != nil {
		s.admin.close()
	}
	var all []*serverRT
	for _, sv := range s.servers {
		all = append(all, sv)
	}
	for sv := range s.draining {
		all = append(all, sv)
	}
	s.mu.Unlock()
	for _, sv := range all {
		sv.stopChecks()
		sv.mu.Lock()
		if sv.drainTmr != nil {
			sv.drainTmr.Stop()
		}
		sv.mu.Unlock()
		sv.closeConns()
	}
	s.pendingMu.Lock()
	for c := range s.pending {
		c.Close()
	}
	s.pendingMu.Unlock()
	s.capacity.setMax(0) // wake waiting accept loops
	s.parker.close()
	s.wg.Wait()
	s.pipes.closeAll()
	s.logger().Info("load balancer stopped")
	return nil
}

// Shutdown stops accepting (the listeners close; UDP flows end) and lets
// open TCP connections finish until ctx is done, then closes everything.
// With SO_REUSEPORT a new process can already listen on the same ports,
// so an upgrade loses no established connection.
func (s *Balancer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.started && !s.closed.Load() {
		for k, l := range s.listeners {
			l.close()
			delete(s.listeners, k)
		}
		s.logger().Info("shutting down: listeners closed, waiting for connections", "connections", s.capacity.count())
	}
	s.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.capacity.count() > 0 {
		select {
		case <-ctx.Done():
			s.logger().Warn("shutdown grace period over, closing connections", "connections", s.capacity.count())
			return s.Close()
		case <-t.C:
		}
	}
	return s.Close()
}

// Reload fills in cfg's defaults, validates it and applies it: listeners that stay are kept open,
// connections continue on their servers, removed servers drain. If cfg is
// invalid or a new listener cannot be bound, nothing changes and the error
// says why.
func (s *Balancer) Reload(cfg *Config) error {
	if cfg == nil {
		return errors.New("reloading load balancer: no config")
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		s.reloadErr.Add(1)
		return fmt.Errorf("rejecting new load balancer config: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return errors.New("reloading load balancer: it is closed")
	}
	if !s.started {
		s.Config = cfg
		return nil
	}
	if err := s.apply(cfg); err != nil {
		s.reloadErr.Add(1)
		return fmt.Errorf("rejecting new load balancer config: %w", err)
	}
	s.reloads.Add(1)
	s.Config = cfg
	s.logger().Info("configuration reloaded", "frontends", len(cfg.Frontends), "backends", len(cfg.Backends))
	return nil
}

func listenerKey(proto, addr, frontend string, i int) string {
	k := proto + " " + addr
	if strings.HasSuffix(addr, ":0") {
		k += " " + frontend + "#" + strconv.Itoa(i)
	}
	return k
}

// apply builds a new state from cfg and swaps it in. Called with s.mu held.
func (s *Balancer) apply(cfg *Config) error {
	// 1. Bind new listeners first: if one fails, nothing has changed.
	type want struct {
		key, proto, addr string
		fe               int
	}
	var wants []want
	needed := map[string]bool{}
	for i, f := range cfg.Frontends {
		for j, a := range f.Listen {
			k := listenerKey(f.Protocol, a, f.Name, j)
			wants = append(wants, want{k, f.Protocol, a, i})
			needed[k] = true
		}
	}
	// A listener bound to port 0 is kept when the new config names the
	// port it got.
	bound := map[string]string{}
	for k, l := range s.listeners {
		bound[strings.SplitN(k, " ", 2)[0]+" "+l.localAddr().String()] = k
	}
	for _, w := range wants {
		if _, ok := s.listeners[w.key]; ok {
			continue
		}
		if k, ok := bound[w.proto+" "+w.addr]; ok && !needed[k] {
			l := s.listeners[k]
			delete(s.listeners, k)
			l.key = w.key
			s.listeners[w.key] = l
		}
	}
	fresh := map[string]*listener{}
	for _, w := range wants {
		if _, ok := s.listeners[w.key]; ok {
			continue
		}
		l, err := s.listen(w.proto, w.addr)
		if err != nil {
			for _, l := range fresh {
				l.close()
			}
			return fmt.Errorf("frontend %s: %w", cfg.Frontends[w.fe].Name, err)
		}
		l.key = w.key
		fresh[w.key] = l
	}
	var admin *adminServer
	if cfg.Admin.Listen != "" && (s.admin == nil || s.admin.addr != cfg.Admin.Listen) {
		a, err := s.listenAdmin(cfg.Admin.Listen)
		if err != nil {
			for _, l := range fresh {
				l.close()
			}
			return fmt.Errorf("admin listener: %w", err)
		}
		admin = a
	}

	// 2. Build the new generation, reusing servers that stay.
	st := &state{cfg: cfg, backends: map[string]*backendRT{}}
	servers := map[string]*serverRT{}
	var added, kept []*serverRT
	for _, b := range cfg.Backends {
		var list []*serverRT
		for _, sc := range b.Servers {
			k := b.Name + "|" + sc.Address
			sv := s.servers[k]
			if sv == nil {
				sv = newServerRT(b.Name, sc)
				added = append(added, sv)
			} else {
				kept = append(kept, sv)
			}
			sv.weight.Store(int64(sc.Weight))
			sv.disabled.Store(sc.Disabled)
			p := *b.Passive
			sv.passive.Store(&p)
			servers[k] = sv
			list = append(list, sv)
		}
		ns := s.noServ[b.Name]
		if ns == nil {
			ns = new(atomic.Uint64)
			s.noServ[b.Name] = ns
		}
		st.backends[b.Name] = newBackendRT(b, list, ns)
		st.order = append(st.order, b.Name)
	}
	for _, f := range cfg.Frontends {
		fs := s.feStats[f.Name]
		if fs == nil {
			fs = &frontendStats{}
			s.feStats[f.Name] = fs
		}
		fr := &frontendRT{cfg: f, stats: fs, acceptProxy: f.AcceptProxy != nil}
		if f.Backend != "" {
			fr.def = st.backends[f.Backend]
		}
		for _, r := range f.Routes {
			pats := make([]string, len(r.SNI))
			for i, p := range r.SNI {
				pats[i] = strings.ToLower(p)
			}
			fr.routes = append(fr.routes, routeRT{patterns: pats, backend: st.backends[r.Backend]})
		}
		fr.needSNI = len(fr.routes) > 0
		st.frontends = append(st.frontends, fr)
	}

	// 3. Swap: limits, listeners, state.
	s.capacity.setMax(cfg.Limits.MaxConnections)
	s.pipes.resize(cfg.Tuning.MaxIdlePipes, cfg.Tuning.PipeSize)
	s.parker.mu.Lock()
	s.parker.release = !cfg.Tuning.NoMemoryRelease
	s.parker.mu.Unlock()
	s.state.Store(st)
	for _, w := range wants {
		l := s.listeners[w.key]
		if l == nil {
			l = fresh[w.key]
			s.listeners[w.key] = l
			l.fe.Store(st.frontends[w.fe])
			s.serve(l)
		} else {
			l.fe.Store(st.frontends[w.fe])
		}
	}
	for k, l := range s.listeners {
		if !needed[k] {
			delete(s.listeners, k)
			l.close()
		}
	}
	if admin != nil {
		if s.admin != nil {
			s.admin.close()
		}
		s.admin = admin
		admin.serve(s)
	} else if cfg.Admin.Listen == "" && s.admin != nil {
		s.admin.close()
		s.admin = nil
	}

	// 4. Servers: checks for new ones, drain for removed ones.
	checks := map[string]*HealthCheck{}
	for _, b := range cfg.Backends {
		checks[b.Name] = b.HealthCheck
	}
	for _, sv := range added {
		s.startChecks(sv, checks[sv.backend])
	}
	for _, sv := range kept {
		if !reflect.DeepEqual(sv.checkCfg(), checks[sv.backend]) {
			sv.stopChecks()
			if checks[sv.backend] == nil {
				sv.up.Store(true)
			}
			s.startChecks(sv, checks[sv.backend])
		}
	}
	drain := map[string]time.Duration{}
	for _, b := range s.currentBackends() {
		drain[b.Name] = b.DrainTimeout.D()
	}
	for k, sv := range s.servers {
		if _, ok := servers[k]; ok {
			continue
		}
		s.drain(sv, drain[sv.backend])
	}
	s.servers = servers
	return nil
}

// currentBackends returns the backends of the config being replaced.
func (s *Balancer) currentBackends() []Backend {
	if s.Config == nil || !s.started {
		return nil
	}
	return s.Config.Backends
}

// drain takes sv out of rotation; its connections may finish within d,
// then they are closed.
func (s *Balancer) drain(sv *serverRT, d time.Duration) {
	if d <= 0 {
		d = DefaultDrainTimeout
	}
	sv.draining.Store(true)
	sv.stopChecks()
	s.draining[sv] = struct{}{}
	n := sv.active.Load()
	s.logger().Info("server removed, draining", "backend", sv.backend, "server", sv.addr, "connections", n, "timeout", d.String())
	sv.mu.Lock()
	sv.drainTmr = time.AfterFunc(d, func() {
		sv.drained.Store(true)
		if closed := sv.closeConns(); closed > 0 {
			s.logger().Warn("drain timeout: closed remaining connections", "backend", sv.backend, "server", sv.addr, "connections", closed)
		}
		s.mu.Lock()
		delete(s.draining, sv)
		s.mu.Unlock()
	})
	sv.mu.Unlock()
}

func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// listen binds one address with SO_REUSEPORT (so a new process can bind
// beside an old one during an upgrade). IPv6 addresses are IPv6 only, so
// "0.0.0.0:443" and "[::]:443" can both be listed.
func (s *Balancer) listen(proto, addr string) (*listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	family := "4"
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = "6"
	}
	lc := net.ListenConfig{Control: reusePort, KeepAlive: -1}
	l := &listener{addr: addr}
	switch proto {
	case "udp":
		pc, err := lc.ListenPacket(context.Background(), "udp"+family, addr)
		if err != nil {
			return nil, fmt.Errorf("listening on udp %s: %w", addr, err)
		}
		l.udp = newUDPFrontend(s, l, pc.(*net.UDPConn))
	default:
		ln, err := listenTCP(ap)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		l.tcp = ln
		l.tcpA = net.TCPAddrFromAddrPort(ln.localAddr())
	}
	return l, nil
}

func (l *listener) close() {
	if l.tcp != nil {
		l.tcp.Close()
	}
	if l.udp != nil {
		l.udp.close()
	}
}

func (l *listener) localAddr() net.Addr {
	if l.tcp != nil {
		return l.tcpA
	}
	return l.udp.conn.LocalAddr()
}

// serve starts l's accept (or read) loop.
func (s *Balancer) serve(l *listener) {
	s.wg.Add(1)
	if l.udp != nil {
		go func() {
			defer s.wg.Done()
			l.udp.run()
		}()
		return
	}
	go func() {
		defer s.wg.Done()
		s.acceptLoop(l)
	}()
}

func (s *Balancer) acceptLoop(l *listener) {
	var backoff time.Duration
	acc := newAcceptor(l.tcp.rc)
	for {
		if s.capacity.wait(s.done) {
			if fe := l.fe.Load(); fe != nil {
				fe.stats.waited.Add(1)
			}
		}
		fd, client, err := acc.accept()
		if err != nil {
			if isClosed(err) {
				return
			}
			// Out of file descriptors and the like: wait, then go on.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, time.Second)
			}
			s.logger().Warn("accept failed", "listen", l.addr, "err", err, "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
			case <-s.done:
				return
			}
			continue
		}
		backoff = 0
		s.capacity.acquire()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(l, fd, client)
		}()
	}
}

// Addrs returns the bound addresses of a frontend's listeners (useful
// with port 0), sorted.
func (s *Balancer) Addrs(frontend string) []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		if fe := l.fe.Load(); fe != nil && fe.cfg.Name == frontend {
			out = append(out, l.localAddr())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// AdminAddr returns the admin listener's address, or nil.
func (s *Balancer) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admin == nil {
		return nil
	}
	return s.admin.ln.Addr()
}

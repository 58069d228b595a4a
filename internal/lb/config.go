package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/homelab-dev/homelab/internal/units"
)

// Config is the load balancer's whole configuration, as read from its YAML
// file. Parse fills in defaults and validates it; a Config built in Go should
// go through Validate (and SetDefaults) before Server.Reload.
type Config struct {
	// Version is the config format version; 0 or 1.
	Version   int         `yaml:"version,omitempty" json:"version,omitempty"`
	Admin     AdminConfig `yaml:"admin,omitempty" json:"admin,omitempty"`
	Limits    Limits      `yaml:"limits,omitempty" json:"limits,omitempty"`
	Timeouts  Timeouts    `yaml:"timeouts,omitempty" json:"timeouts,omitempty"`
	Tuning    Tuning      `yaml:"tuning,omitempty" json:"tuning,omitempty"`
	Frontends []Frontend  `yaml:"frontends" json:"frontends"`
	Backends  []Backend   `yaml:"backends" json:"backends"`
}

// AdminConfig is the admin listener: /metrics (Prometheus), /status (JSON)
// and / (HTML). An empty Listen disables it.
type AdminConfig struct {
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"`
}

// Limits protect the balancer and its backends. Zero means unlimited.
type Limits struct {
	// MaxConnections caps client connections across all frontends. At the
	// cap the balancer stops accepting; new clients wait in the kernel's
	// listen backlog instead of being refused.
	MaxConnections int `yaml:"maxConnections,omitempty" json:"maxConnections,omitempty"`
	// PerSourceConnections caps concurrent connections from one client address.
	PerSourceConnections int `yaml:"perSourceConnections,omitempty" json:"perSourceConnections,omitempty"`
	// PerSourceRate caps new connections per second from one client address
	// (a token bucket of PerSourceBurst tokens, default max(1, rate)).
	PerSourceRate  float64 `yaml:"perSourceRate,omitempty" json:"perSourceRate,omitempty"`
	PerSourceBurst int     `yaml:"perSourceBurst,omitempty" json:"perSourceBurst,omitempty"`
}

// Timeouts bound each phase of a connection.
type Timeouts struct {
	// Connect bounds one dial to a backend server (default 3s).
	Connect Duration `yaml:"connect,omitempty" json:"connect,omitempty"`
	// Idle closes a TCP connection with no traffic either way (default 10m).
	Idle Duration `yaml:"idle,omitempty" json:"idle,omitempty"`
	// Handshake bounds reading the PROXY header and the TLS ClientHello (default 5s).
	Handshake Duration `yaml:"handshake,omitempty" json:"handshake,omitempty"`
	// UDPIdle forgets a UDP flow with no traffic either way (default 60s).
	UDPIdle Duration `yaml:"udpIdle,omitempty" json:"udpIdle,omitempty"`
}

// Tuning holds data path knobs; the defaults suit most hosts.
type Tuning struct {
	// PipeSize is the kernel pipe size used for splice (default 262144; the
	// kernel rounds it and caps it at /proc/sys/fs/pipe-max-size).
	PipeSize int `yaml:"pipeSize,omitempty" json:"pipeSize,omitempty"`
	// MaxIdlePipes bounds the pool of spare pipes (default 64).
	MaxIdlePipes int `yaml:"maxIdlePipes,omitempty" json:"maxIdlePipes,omitempty"`
	// ParkAfter is how long a direction of a connection waits for data
	// on its own goroutine; after that it is parked: the goroutine ends
	// and one shared epoll set watches the socket (default 100ms). Idle
	// connections then cost no goroutine. Go never frees a goroutine's
	// descriptor (about 400 bytes) once made, so the goroutines alive at
	// a burst's peak stay in memory: parking early keeps that peak low.
	ParkAfter Duration `yaml:"parkAfter,omitempty" json:"parkAfter,omitempty"`
	// NoPark keeps every connection on its goroutines.
	NoPark bool `yaml:"noPark,omitempty" json:"noPark,omitempty"`
	// NoMemoryRelease keeps memory freed when a burst of connections
	// parks (by default it is returned to the system at once, at the cost
	// of a garbage collection, at most once a second).
	NoMemoryRelease bool `yaml:"noMemoryRelease,omitempty" json:"noMemoryRelease,omitempty"`
	// NoSplice copies through a pooled buffer instead of splice(2).
	NoSplice bool `yaml:"noSplice,omitempty" json:"noSplice,omitempty"`
}

// Frontend is a set of listeners sharing routing rules.
type Frontend struct {
	Name string `yaml:"name" json:"name"`
	// Listen holds "ip:port" addresses, for example "0.0.0.0:443" or "[::]:443".
	Listen []string `yaml:"listen" json:"listen"`
	// Protocol is tcp (default) or udp.
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	// AcceptProxy, when set, requires a PROXY v1 or v2 header from the
	// trusted upstreams and uses the client address it carries.
	AcceptProxy *AcceptProxy `yaml:"acceptProxy,omitempty" json:"acceptProxy,omitempty"`
	// Allow, when not empty, admits only these client networks; Deny
	// refuses these (Deny wins).
	Allow []netip.Prefix `yaml:"allow,omitempty" json:"allow,omitempty"`
	Deny  []netip.Prefix `yaml:"deny,omitempty" json:"deny,omitempty"`
	// Routes pick a backend by TLS SNI (the ClientHello is peeked, TLS is
	// not terminated); the first match wins.
	Routes []Route `yaml:"routes,omitempty" json:"routes,omitempty"`
	// Backend is the default backend: no route matched, or no SNI.
	Backend string `yaml:"backend,omitempty" json:"backend,omitempty"`
}

// AcceptProxy accepts PROXY protocol headers from trusted upstreams only;
// a connection from any other address is refused.
type AcceptProxy struct {
	Trusted []netip.Prefix `yaml:"trusted" json:"trusted"`
}

// Route sends connections whose SNI matches one of SNI (exact names or
// "*.example.org", which matches one or more labels) to Backend.
type Route struct {
	SNI     []string `yaml:"sni" json:"sni"`
	Backend string   `yaml:"backend" json:"backend"`
}

// Backend is a pool of servers.
type Backend struct {
	Name string `yaml:"name" json:"name"`
	// Balance is roundrobin (default), leastconn, p2c or hash (consistent
	// hashing of the client address).
	Balance string `yaml:"balance,omitempty" json:"balance,omitempty"`
	// ProxyProtocol sends a PROXY header to servers: "", "v1" or "v2".
	ProxyProtocol string `yaml:"proxyProtocol,omitempty" json:"proxyProtocol,omitempty"`
	// DrainTimeout is how long connections to a server removed by a reload
	// may continue before they are closed (default 30s).
	DrainTimeout Duration     `yaml:"drainTimeout,omitempty" json:"drainTimeout,omitempty"`
	Servers      []Server     `yaml:"servers" json:"servers"`
	HealthCheck  *HealthCheck `yaml:"healthCheck,omitempty" json:"healthCheck,omitempty"`
	// Passive ejects a server after consecutive connect failures. Nil means
	// the defaults (3 failures, 10s).
	Passive *Passive `yaml:"passive,omitempty" json:"passive,omitempty"`
	// ReplayOnReset (off by default) resends a connection's first client
	// bytes, at most ReplayBytes of them, to another server when the
	// server resets the connection before sending a single byte back (for
	// example a server killed with the connection still in its accept
	// queue). The reset means the server did not read everything it was
	// sent, but it may have read and acted on part of it: turn it on only
	// for protocols where a request delivered twice is harmless (see
	// docs/lb.md).
	ReplayOnReset bool `yaml:"replayOnReset,omitempty" json:"replayOnReset,omitempty"`
	// ReplayBytes bounds the bytes kept for ReplayOnReset (default 16384,
	// at most 1 MiB); a connection whose client sends more before the
	// server answers is not replayed.
	ReplayBytes int `yaml:"replayBytes,omitempty" json:"replayBytes,omitempty"`
}

// Server is one backend server.
type Server struct {
	Address string `yaml:"address" json:"address"`
	// Weight is the server's share of new connections (default 1).
	Weight int `yaml:"weight,omitempty" json:"weight,omitempty"`
	// Disabled takes the server out of rotation; its connections continue.
	Disabled bool `yaml:"disabled,omitempty" json:"disabled,omitempty"`
}

// HealthCheck is an active check run against every server of a backend.
type HealthCheck struct {
	// Type is tcp (connect only), http or https.
	Type string `yaml:"type" json:"type"`
	// Path is the HTTP path (default "/").
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// ExpectStatus is the wanted HTTP status (default 200).
	ExpectStatus int `yaml:"expectStatus,omitempty" json:"expectStatus,omitempty"`
	// Interval between checks (default 2s); Timeout of one check (default 1s).
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	Timeout  Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Rise successes mark a down server up (default 2); Fall failures mark
	// an up server down (default 3).
	Rise int `yaml:"rise,omitempty" json:"rise,omitempty"`
	Fall int `yaml:"fall,omitempty" json:"fall,omitempty"`
	// TLS configures https checks.
	TLS *CheckTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
}

// CheckTLS configures an https check: the CA that signs the servers, an
// optional client certificate (for example Kubernetes' /readyz under Talos)
// and the name to verify.
type CheckTLS struct {
	CAFile             string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
	CertFile           string `yaml:"certFile,omitempty" json:"certFile,omitempty"`
	KeyFile            string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	ServerName         string `yaml:"serverName,omitempty" json:"serverName,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify,omitempty" json:"insecureSkipVerify,omitempty"`
}

// Passive configures passive ejection.
type Passive struct {
	// Failures is the count of consecutive connect failures that eject a
	// server (default 3).
	Failures int `yaml:"failures,omitempty" json:"failures,omitempty"`
	// EjectFor is how long an ejected server sits out (default 10s).
	EjectFor Duration `yaml:"ejectFor,omitempty" json:"ejectFor,omitempty"`
	// Disable turns passive ejection off.
	Disable bool `yaml:"disable,omitempty" json:"disable,omitempty"`
}

// Duration is a time.Duration written as "2s", "500ms" or "1m30s".
type Duration = units.Duration

// Defaults applied by SetDefaults.
const (
	DefaultConnectTimeout   = 3 * time.Second
	DefaultReplayBytes      = 16 << 10
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultUDPIdleTimeout   = 60 * time.Second
	DefaultDrainTimeout     = 30 * time.Second
	DefaultPipeSize         = 256 << 10
	DefaultMaxIdlePipes     = 64
	DefaultParkAfter        = 100 * time.Millisecond
)

// Balance algorithms.
const (
	BalanceRoundRobin = "roundrobin"
	BalanceLeastConn  = "leastconn"
	BalanceP2C        = "p2c"
	BalanceHash       = "hash"
)

// SetDefaults fills unset fields with their defaults.
func (c *Config) SetDefaults() {
	setDur := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	setDur(&c.Timeouts.Connect, DefaultConnectTimeout)
	setDur(&c.Timeouts.Idle, DefaultIdleTimeout)
	setDur(&c.Timeouts.Handshake, DefaultHandshakeTimeout)
	setDur(&c.Timeouts.UDPIdle, DefaultUDPIdleTimeout)
	if c.Tuning.PipeSize == 0 {
		c.Tuning.PipeSize = DefaultPipeSize
	}
	setDur(&c.Tuning.ParkAfter, DefaultParkAfter)
	if c.Tuning.MaxIdlePipes == 0 {
		c.Tuning.MaxIdlePipes = DefaultMaxIdlePipes
	}
	if c.Limits.PerSourceRate > 0 && c.Limits.PerSourceBurst == 0 {
		c.Limits.PerSourceBurst = max(1, int(c.Limits.PerSourceRate))
	}
	for i := range c.Frontends {
		f := &c.Frontends[i]
		if f.Protocol == "" {
			f.Protocol = "tcp"
		}
	}
	for i := range c.Backends {
		b := &c.Backends[i]
		if b.Balance == "" {
			b.Balance = BalanceRoundRobin
		}
		setDur(&b.DrainTimeout, DefaultDrainTimeout)
		for j := range b.Servers {
			if b.Servers[j].Weight == 0 {
				b.Servers[j].Weight = 1
			}
		}
		if b.Passive == nil {
			b.Passive = &Passive{}
		}
		if b.ReplayOnReset && b.ReplayBytes == 0 {
			b.ReplayBytes = DefaultReplayBytes
		}
		if b.Passive.Failures == 0 {
			b.Passive.Failures = 3
		}
		setDur(&b.Passive.EjectFor, 10*time.Second)
		if h := b.HealthCheck; h != nil {
			if h.Type == "" {
				h.Type = "tcp"
			}
			if h.Type != "tcp" {
				if h.Path == "" {
					h.Path = "/"
				}
				if h.ExpectStatus == 0 {
					h.ExpectStatus = 200
				}
			}
			setDur(&h.Interval, 2*time.Second)
			setDur(&h.Timeout, time.Second)
			if h.Rise == 0 {
				h.Rise = 2
			}
			if h.Fall == 0 {
				h.Fall = 3
			}
		}
	}
}

// FieldError is one problem in a config, at a YAML path such as
// "frontends[0].listen[1]", with its position in the file when known.
type FieldError struct {
	Line, Column int
	Path         string
	Msg          string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return printable(b.String())
}

// printable escapes control and invalid bytes, so a hostile file cannot
// write raw bytes into logs and terminals through an error message.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || r >= 0x80 && r < 0xa0 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// Validate checks a config with defaults applied and returns every problem
// at once (errors.Join of *FieldError), or nil.
func (c *Config) Validate() error {
	return joinFieldErrors(c.validate())
}

func joinFieldErrors(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

func (c *Config) validate() []*FieldError {
	var errs []*FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Version != 0 && c.Version != 1 {
		add("version", "unsupported version %d: this balancer reads version 1", c.Version)
	}
	if c.Admin.Listen != "" {
		if _, err := netip.ParseAddrPort(c.Admin.Listen); err != nil {
			if _, _, err2 := net.SplitHostPort(c.Admin.Listen); err2 != nil {
				add("admin.listen", "invalid address %q: want ip:port, for example 127.0.0.1:9100", c.Admin.Listen)
			}
		}
	}
	if c.Limits.MaxConnections < 0 {
		add("limits.maxConnections", "must not be negative")
	}
	if c.Limits.PerSourceConnections < 0 {
		add("limits.perSourceConnections", "must not be negative")
	}
	if c.Limits.PerSourceRate < 0 {
		add("limits.perSourceRate", "must not be negative")
	}
	if c.Limits.PerSourceBurst < 0 {
		add("limits.perSourceBurst", "must not be negative")
	}
	if c.Tuning.PipeSize < 4096 || c.Tuning.PipeSize > 64<<20 {
		add("tuning.pipeSize", "must be between 4096 and 67108864, got %d", c.Tuning.PipeSize)
	}
	if c.Tuning.MaxIdlePipes < 0 {
		add("tuning.maxIdlePipes", "must not be negative")
	}

	backends := map[string]int{}
	for i, b := range c.Backends {
		p := fmt.Sprintf("backends[%d]", i)
		if b.Name == "" {
			add(p+".name", "a backend needs a name")
		} else if j, dup := backends[b.Name]; dup {
			add(p+".name", "duplicate backend name %q (also backends[%d])", b.Name, j)
		} else {
			backends[b.Name] = i
		}
		switch b.Balance {
		case BalanceRoundRobin, BalanceLeastConn, BalanceP2C, BalanceHash:
		default:
			add(p+".balance", "unknown algorithm %q: want roundrobin, leastconn, p2c or hash", b.Balance)
		}
		switch b.ProxyProtocol {
		case "", "v1", "v2":
		default:
			add(p+".proxyProtocol", "unknown PROXY protocol version %q: want v1, v2 or nothing", b.ProxyProtocol)
		}
		if len(b.Servers) == 0 {
			add(p+".servers", "a backend needs at least one server")
		}
		seen := map[string]int{}
		for j, s := range b.Servers {
			sp := fmt.Sprintf("%s.servers[%d]", p, j)
			if err := checkHostPort(s.Address, false); err != nil {
				add(sp+".address", "%v", err)
			}
			if k, dup := seen[s.Address]; dup {
				add(sp+".address", "duplicate server %q (also servers[%d])", s.Address, k)
			}
			seen[s.Address] = j
			if s.Weight < 1 || s.Weight > 1000 {
				add(sp+".weight", "must be between 1 and 1000, got %d", s.Weight)
			}
		}
		if h := b.HealthCheck; h != nil {
			hp := p + ".healthCheck"
			switch h.Type {
			case "tcp":
				if h.TLS != nil {
					add(hp+".tls", "tls applies to https checks only")
				}
			case "http", "https":
				if !strings.HasPrefix(h.Path, "/") {
					add(hp+".path", "must start with /, got %q", h.Path)
				}
				if h.ExpectStatus < 100 || h.ExpectStatus > 599 {
					add(hp+".expectStatus", "must be an HTTP status between 100 and 599, got %d", h.ExpectStatus)
				}
				if h.Type == "http" && h.TLS != nil {
					add(hp+".tls", "tls applies to https checks only")
				}
			default:
				add(hp+".type", "unknown check type %q: want tcp, http or https", h.Type)
			}
			if h.Timeout > h.Interval {
				add(hp+".timeout", "timeout %s is longer than interval %s", h.Timeout, h.Interval)
			}
			if h.Rise < 1 {
				add(hp+".rise", "must be at least 1")
			}
			if h.Fall < 1 {
				add(hp+".fall", "must be at least 1")
			}
			if t := h.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
				add(hp+".tls", "certFile and keyFile go together")
			}
		}
		if b.Passive != nil && b.Passive.Failures < 0 {
			add(p+".passive.failures", "must not be negative")
		}
		if b.ReplayBytes < 0 || b.ReplayBytes > 1<<20 {
			add(p+".replayBytes", "must be between 0 and 1048576, got %d", b.ReplayBytes)
		}
	}

	names := map[string]int{}
	listens := map[string]string{}
	for i, f := range c.Frontends {
		p := fmt.Sprintf("frontends[%d]", i)
		if f.Name == "" {
			add(p+".name", "a frontend needs a name")
		} else if j, dup := names[f.Name]; dup {
			add(p+".name", "duplicate frontend name %q (also frontends[%d])", f.Name, j)
		} else {
			names[f.Name] = i
		}
		switch f.Protocol {
		case "tcp", "udp":
		default:
			add(p+".protocol", "unknown protocol %q: want tcp or udp", f.Protocol)
		}
		if len(f.Listen) == 0 {
			add(p+".listen", "a frontend needs at least one listen address")
		}
		for j, l := range f.Listen {
			lp := fmt.Sprintf("%s.listen[%d]", p, j)
			if err := checkHostPort(l, true); err != nil {
				add(lp, "%v", err)
				continue
			}
			key := f.Protocol + " " + l
			if other, dup := listens[key]; dup && !strings.HasSuffix(l, ":0") {
				add(lp, "address %s is already used by %s", l, other)
			}
			listens[key] = lp
		}
		if f.AcceptProxy != nil && len(f.AcceptProxy.Trusted) == 0 {
			add(p+".acceptProxy.trusted", "list the upstream networks allowed to send PROXY headers")
		}
		if f.Protocol == "udp" {
			if f.AcceptProxy != nil {
				add(p+".acceptProxy", "PROXY headers are accepted on tcp frontends only")
			}
			if len(f.Routes) > 0 {
				add(p+".routes", "SNI routes apply to tcp frontends only")
			}
		}
		if f.Backend == "" && len(f.Routes) == 0 {
			add(p+".backend", "a frontend needs a default backend or routes")
		}
		if f.Backend != "" {
			if _, ok := backends[f.Backend]; !ok {
				add(p+".backend", "unknown backend %q", f.Backend)
			}
		}
		for j, r := range f.Routes {
			rp := fmt.Sprintf("%s.routes[%d]", p, j)
			if len(r.SNI) == 0 {
				add(rp+".sni", "a route needs at least one server name")
			}
			for k, n := range r.SNI {
				if err := checkSNIPattern(n); err != nil {
					add(fmt.Sprintf("%s.sni[%d]", rp, k), "%v", err)
				}
			}
			if _, ok := backends[r.Backend]; !ok {
				add(rp+".backend", "unknown backend %q", r.Backend)
			}
		}
	}
	return errs
}

func checkHostPort(s string, listen bool) error {
	if s == "" {
		return errors.New("address is empty: want ip:port")
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("invalid address %q: want ip:port, for example 10.0.2.10:443 or [::]:443", s)
	}
	if ap.Port() == 0 && !listen {
		return fmt.Errorf("invalid address %q: port 0", s)
	}
	if z := ap.Addr().Zone(); z != "" {
		// The raw sockets (newRawAddr) set no scope id: refuse the
		// zone rather than drop it and dial or bind without it.
		return fmt.Errorf("invalid address %q: IPv6 zones (%%%s) are not supported: use an address that needs none (not link-local)", s, z)
	}
	return nil
}

func checkSNIPattern(n string) error {
	name := strings.TrimPrefix(n, "*.")
	if name == "" || len(n) > 253 {
		return fmt.Errorf("invalid server name %q", n)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid server name %q: empty or long label", n)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("invalid server name %q: use letters, digits and '-', with an optional leading \"*.\"", n)
			}
		}
	}
	return nil
}

// LoadFile reads and parses a config file; errors carry "file:line:col".
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading load balancer config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, prefixErrors(path, err)
	}
	return c, nil
}

func prefixErrors(path string, err error) error {
	var fes []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		fes = j.Unwrap()
	} else {
		fes = []error{err}
	}
	out := make([]error, len(fes))
	for i, e := range fes {
		out[i] = fmt.Errorf("%s:%w", path, e)
		var fe *FieldError
		if errors.As(e, &fe) && fe.Line == 0 {
			out[i] = fmt.Errorf("%s: %w", path, e)
		}
	}
	return errors.Join(out...)
}

// Parse decodes a YAML config strictly (unknown keys are errors), applies
// defaults and validates it. Every problem found is reported at once, each
// with its line:column and field path.
func Parse(data []byte) (*Config, error) {
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, joinFieldErrors([]*FieldError{yamlError(err, nil)})
	}
	pos := map[string]ast.Node{}
	var errs []*FieldError
	var root ast.Node
	if len(file.Docs) > 1 {
		errs = append(errs, &FieldError{Msg: "the file holds several YAML documents; want one"})
	}
	if len(file.Docs) > 0 {
		root = file.Docs[0].Body
	}
	if root == nil || root.Type() == ast.NullType {
		return nil, &FieldError{Msg: "the config is empty: want at least frontends and backends"}
	}
	walkKeys(root, reflect.TypeOf(Config{}), "", pos, &errs, nil)
	for _, e := range errs {
		if strings.HasPrefix(e.Msg, "unknown field") {
			// Strict decoding would stop at the first; we have them all.
			return nil, joinFieldErrors(errs)
		}
	}
	var c Config
	if err := decodeNode(root, &c); err != nil {
		return nil, joinFieldErrors(append(errs, yamlError(err, pos)))
	}
	c.SetDefaults()
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.Path] = true
	}
	for _, e := range c.validate() {
		if !bad[e.Path] {
			locate(e, pos)
			errs = append(errs, e)
		}
	}
	if err := joinFieldErrors(errs); err != nil {
		return nil, err
	}
	return &c, nil
}

// decodeNode decodes strictly. The YAML decoder can panic on some
// malformed input (found by fuzzing); that becomes an error.
func decodeNode(n ast.Node, c *Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot decode this YAML (decoder failure: %v); check the structure against the reference", r)
		}
	}()
	return yaml.NodeToValue(n, c, yaml.Strict())
}

// locate sets e's position from the closest known YAML path.
func locate(e *FieldError, pos map[string]ast.Node) {
	p := e.Path
	for p != "" {
		if n, ok := pos[p]; ok {
			tk := n.GetToken()
			if tk != nil && tk.Position != nil {
				e.Line, e.Column = tk.Position.Line, tk.Position.Column
			}
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
}

func yamlError(err error, pos map[string]ast.Node) *FieldError {
	var ye yaml.Error
	if errors.As(err, &ye) {
		fe := &FieldError{Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			fe.Line, fe.Column = tk.Position.Line, tk.Position.Column
			for path, n := range pos {
				if t := n.GetToken(); t != nil && t.Position != nil && t.Position.Offset == tk.Position.Offset {
					if len(path) > len(fe.Path) {
						fe.Path = path
					}
				}
			}
		}
		return fe
	}
	return &FieldError{Msg: err.Error()}
}

var textUnmarshaler = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()

// walkKeys records the node at each YAML path and reports keys that t does
// not have, all of them, before decoding.
func walkKeys(n ast.Node, t reflect.Type, path string, pos map[string]ast.Node, errs *[]*FieldError, set func(ast.Node)) {
	for {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
			continue
		case *ast.TagNode:
			n = v.Value
			continue
		}
		break
	}
	if n == nil {
		return
	}
	if path != "" {
		pos[path] = n
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		// Check text values here, so each bad one is reported with its
		// position (the decoder stops at the first and loses it).
		if sc, ok := n.(ast.ScalarNode); ok && n.Type() != ast.NullType {
			u := reflect.New(t).Interface().(interface{ UnmarshalText([]byte) error })
			if err := u.UnmarshalText([]byte(fmt.Sprint(sc.GetValue()))); err != nil {
				fe := &FieldError{Path: path, Msg: err.Error()}
				if tk := n.GetToken(); tk != nil && tk.Position != nil {
					fe.Line, fe.Column = tk.Position.Line, tk.Position.Column
				}
				*errs = append(*errs, fe)
				// Decode the rest with this value unset, so validation
				// can report the other problems too.
				if set != nil {
					set(ast.Null(token.New("null", "null", n.GetToken().Position)))
				}
			}
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := n.(*ast.MappingNode)
		if !ok {
			if mv, ok1 := n.(*ast.MappingValueNode); ok1 {
				m = &ast.MappingNode{Values: []*ast.MappingValueNode{mv}}
			} else {
				return // the decoder reports the type mismatch
			}
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for _, mv := range m.Values {
			key := mv.Key.GetToken().Value
			kp := key
			if path != "" {
				kp = path + "." + key
			}
			ft, ok := fields[key]
			if !ok {
				fe := &FieldError{Path: kp, Msg: fmt.Sprintf("unknown field %q", key)}
				if tk := mv.Key.GetToken(); tk != nil && tk.Position != nil {
					fe.Line, fe.Column = tk.Position.Line, tk.Position.Column
				}
				*errs = append(*errs, fe)
				continue
			}
			pos[kp] = mv.Key
			walkKeys(mv.Value, ft, kp, pos, errs, func(v ast.Node) { mv.Value = v })
			if mv.Value != nil {
				if _, scalar := mv.Value.(ast.ScalarNode); scalar {
					pos[kp] = mv.Value
				}
			}
		}
	case reflect.Slice:
		s, ok := n.(*ast.SequenceNode)
		if !ok {
			return
		}
		for i, e := range s.Values {
			walkKeys(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", pos, errs, func(v ast.Node) { s.Values[i] = v })
		}
	}
}

// Marshal writes c as YAML that Parse reads back.
func Marshal(c *Config) ([]byte, error) {
	return yaml.MarshalWithOptions(c, yaml.IndentSequence(true))
}

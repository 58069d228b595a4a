package lb

import (
	"bufio"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// adminServer serves /metrics, /status and / on the admin listener.
type adminServer struct {
	addr string
	ln   net.Listener
	srv  *http.Server
}

func (s *Balancer) listenAdmin(addr string) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return &adminServer{addr: addr, ln: ln}, nil
}

func (a *adminServer) serve(s *Balancer) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw := bufio.NewWriter(w)
		s.WriteMetrics(bw)
		bw.Flush()
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, s.Status()); err != nil {
			s.logger().Debug("status page", "err", err)
		}
	})
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		a.srv.Serve(a.ln)
	}()
}

func (a *adminServer) close() {
	if a.srv != nil {
		a.srv.Close()
	} else {
		a.ln.Close()
	}
}

// Status is a snapshot of the balancer, as served on /status.
type Status struct {
	Uptime      string           `json:"uptime"`
	Reloads     uint64           `json:"reloads"`
	ReloadFails uint64           `json:"reloadFailures"`
	Connections int              `json:"connections"`
	MaxConns    int              `json:"maxConnections"`
	PipesOpen   int64            `json:"pipesOpen"`
	PipesInUse  int64            `json:"pipesInUse"`
	Frontends   []FrontendStatus `json:"frontends"`
	Backends    []BackendStatus  `json:"backends"`
}

// FrontendStatus is one frontend in Status.
type FrontendStatus struct {
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	Listen   []string          `json:"listen"`
	Active   int64             `json:"active"`
	Accepted uint64            `json:"accepted"`
	BytesIn  uint64            `json:"bytesIn"`
	BytesOut uint64            `json:"bytesOut"`
	Rejected map[string]uint64 `json:"rejected,omitempty"`
}

// BackendStatus is one backend in Status.
type BackendStatus struct {
	Name     string         `json:"name"`
	Balance  string         `json:"balance"`
	NoServer uint64         `json:"noServer"`
	Servers  []ServerStatus `json:"servers"`
}

// ServerStatus is one server in Status.
type ServerStatus struct {
	Address       string  `json:"address"`
	State         string  `json:"state"` // up, down, ejected, disabled, draining
	Weight        int64   `json:"weight"`
	Active        int64   `json:"active"`
	Connections   uint64  `json:"connections"`
	BytesIn       uint64  `json:"bytesIn"`
	BytesOut      uint64  `json:"bytesOut"`
	ConnectErrors uint64  `json:"connectErrors"`
	ResetEmpty    uint64  `json:"resetBeforeReply"`
	Replayed      uint64  `json:"replayed"`
	Ejections     uint64  `json:"ejections"`
	CheckMillis   float64 `json:"checkMillis,omitempty"`
	LastCheckErr  string  `json:"lastCheckError,omitempty"`
}

// Status returns a snapshot for the status endpoints.
func (s *Balancer) Status() Status {
	st := s.state.Load()
	out := Status{}
	if st == nil {
		return out
	}
	now := time.Now().UnixNano()
	out.Uptime = time.Since(s.startTime).Round(time.Second).String()
	out.Reloads = s.reloads.Load()
	out.ReloadFails = s.reloadErr.Load()
	out.Connections = s.capacity.count()
	out.MaxConns = st.cfg.Limits.MaxConnections
	out.PipesOpen = s.pipes.open.Load()
	out.PipesInUse = s.pipes.inUse.Load()
	for _, f := range st.frontends {
		fs := FrontendStatus{Name: f.cfg.Name, Protocol: f.cfg.Protocol, Listen: f.cfg.Listen,
			Active: f.stats.active.Load(), Accepted: f.stats.accepted.Load(),
			BytesIn: f.stats.bytesIn.Load(), BytesOut: f.stats.bytesOut.Load()}
		f.stats.mu.Lock()
		if len(f.stats.rejected) > 0 {
			fs.Rejected = map[string]uint64{}
			for k, v := range f.stats.rejected {
				fs.Rejected[k] = v
			}
		}
		f.stats.mu.Unlock()
		out.Frontends = append(out.Frontends, fs)
	}
	add := func(name, balance string, noServ uint64, servers []*serverRT) {
		bs := BackendStatus{Name: name, Balance: balance, NoServer: noServ}
		for _, sv := range servers {
			ss := ServerStatus{Address: sv.addr, State: sv.state(now), Weight: sv.weight.Load(),
				Active: sv.active.Load(), Connections: sv.conns.Load(), BytesIn: sv.bytesIn.Load(),
				BytesOut: sv.bytesOut.Load(), ConnectErrors: sv.connectErrs.Load(),
				ResetEmpty: sv.resetEmpty.Load(), Replayed: sv.replayed.Load(), Ejections: sv.ejections.Load(),
				CheckMillis: float64(sv.checkLastNs.Load()) / 1e6}
			sv.mu.Lock()
			ss.LastCheckErr = sv.lastCheck
			sv.mu.Unlock()
			bs.Servers = append(bs.Servers, ss)
		}
		out.Backends = append(out.Backends, bs)
	}
	for _, name := range st.order {
		b := st.backends[name]
		add(b.name, b.cfg.Balance, b.noServ.Load(), b.servers)
	}
	// Servers removed by a reload and still draining.
	s.mu.Lock()
	byBackend := map[string][]*serverRT{}
	for sv := range s.draining {
		byBackend[sv.backend] = append(byBackend[sv.backend], sv)
	}
	s.mu.Unlock()
	names := make([]string, 0, len(byBackend))
	for n := range byBackend {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		list := byBackend[n]
		sort.Slice(list, func(i, j int) bool { return list[i].addr < list[j].addr })
		add(n, "draining", 0, list)
	}
	return out
}

// WriteMetrics writes every metric in the Prometheus text format.
func (s *Balancer) WriteMetrics(w io.Writer) {
	st := s.state.Load()
	if st == nil {
		return
	}
	now := time.Now().UnixNano()
	type sample struct {
		labels string
		value  float64
	}
	fams := []struct {
		name, typ, help string
		samples         []sample
	}{}
	fam := func(name, typ, help string) *[]sample {
		fams = append(fams, struct {
			name, typ, help string
			samples         []sample
		}{name: name, typ: typ, help: help})
		return &fams[len(fams)-1].samples
	}
	_ = fam
	// Build families in a fixed order.
	type famDef struct{ name, typ, help string }
	defs := []famDef{
		{"lb_frontend_connections_total", "counter", "Client connections (TCP) or flows (UDP) accepted."},
		{"lb_frontend_connections_active", "gauge", "Client connections or flows open now."},
		{"lb_frontend_bytes_in_total", "counter", "Bytes from clients to servers."},
		{"lb_frontend_bytes_out_total", "counter", "Bytes from servers to clients."},
		{"lb_frontend_rejected_total", "counter", "Connections refused, by reason."},
		{"lb_frontend_accept_waits_total", "counter", "Accepts delayed by the global connection cap."},
		{"lb_backend_no_server_total", "counter", "Connections that found no server able to take them."},
		{"lb_server_up", "gauge", "1 if the server takes new connections (healthy, not ejected, not draining)."},
		{"lb_server_healthy", "gauge", "Active health check state (1 without checks)."},
		{"lb_server_connections_total", "counter", "Connections sent to the server."},
		{"lb_server_connections_active", "gauge", "Connections open to the server."},
		{"lb_server_bytes_in_total", "counter", "Bytes sent to the server."},
		{"lb_server_bytes_out_total", "counter", "Bytes received from the server."},
		{"lb_server_connect_errors_total", "counter", "Failed connects to the server."},
		{"lb_server_ejections_total", "counter", "Passive ejections after consecutive connect failures, resets before the reply with replayOnReset, or one refused connect."},
		{"lb_server_reset_before_reply_total", "counter", "Connections the server reset before sending a byte."},
		{"lb_server_replayed_total", "counter", "Connections moved to this server by replayOnReset after another server reset them."},
		{"lb_server_checks_total", "counter", "Active health checks, by result."},
		{"lb_server_check_duration_seconds", "gauge", "Duration of the last health check."},
		{"lb_server_check_duration_seconds_sum", "counter", "Total time spent in health checks."},
		{"lb_connections", "gauge", "Client connections open, all frontends."},
		{"lb_max_connections", "gauge", "Global connection cap (0: none)."},
		{"lb_splice_pipes", "gauge", "Kernel pipes, by state (idle in the pool or in use)."},
		{"lb_reloads_total", "counter", "Configuration reloads, by result."},
	}
	samples := map[string][]sample{}
	put := func(name, labels string, v float64) {
		samples[name] = append(samples[name], sample{labels, v})
	}
	for _, f := range st.frontends {
		l := `frontend="` + esc(f.cfg.Name) + `"`
		put("lb_frontend_connections_total", l, float64(f.stats.accepted.Load()))
		put("lb_frontend_connections_active", l, float64(f.stats.active.Load()))
		put("lb_frontend_bytes_in_total", l, float64(f.stats.bytesIn.Load()))
		put("lb_frontend_bytes_out_total", l, float64(f.stats.bytesOut.Load()))
		put("lb_frontend_accept_waits_total", l, float64(f.stats.waited.Load()))
		f.stats.mu.Lock()
		reasons := make([]string, 0, len(f.stats.rejected))
		for r := range f.stats.rejected {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			put("lb_frontend_rejected_total", l+`,reason="`+r+`"`, float64(f.stats.rejected[r]))
		}
		f.stats.mu.Unlock()
	}
	b2i := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, name := range st.order {
		b := st.backends[name]
		bl := `backend="` + esc(b.name) + `"`
		put("lb_backend_no_server_total", bl, float64(b.noServ.Load()))
		for _, sv := range b.servers {
			l := bl + `,server="` + esc(sv.addr) + `"`
			put("lb_server_up", l, b2i(sv.available(now)))
			put("lb_server_healthy", l, b2i(sv.up.Load()))
			put("lb_server_connections_total", l, float64(sv.conns.Load()))
			put("lb_server_connections_active", l, float64(sv.active.Load()))
			put("lb_server_bytes_in_total", l, float64(sv.bytesIn.Load()))
			put("lb_server_bytes_out_total", l, float64(sv.bytesOut.Load()))
			put("lb_server_connect_errors_total", l, float64(sv.connectErrs.Load()))
			put("lb_server_ejections_total", l, float64(sv.ejections.Load()))
			put("lb_server_reset_before_reply_total", l, float64(sv.resetEmpty.Load()))
			put("lb_server_replayed_total", l, float64(sv.replayed.Load()))
			if b.cfg.HealthCheck != nil {
				put("lb_server_checks_total", l+`,result="ok"`, float64(sv.checksOK.Load()))
				put("lb_server_checks_total", l+`,result="failed"`, float64(sv.checksFailed.Load()))
				put("lb_server_check_duration_seconds", l, float64(sv.checkLastNs.Load())/1e9)
				put("lb_server_check_duration_seconds_sum", l, float64(sv.checkSumNs.Load())/1e9)
			}
		}
	}
	put("lb_connections", "", float64(s.capacity.count()))
	put("lb_max_connections", "", float64(st.cfg.Limits.MaxConnections))
	inUse := s.pipes.inUse.Load()
	put("lb_splice_pipes", `state="in_use"`, float64(inUse))
	put("lb_splice_pipes", `state="idle"`, float64(s.pipes.open.Load()-inUse))
	put("lb_reloads_total", `result="ok"`, float64(s.reloads.Load()))
	put("lb_reloads_total", `result="failed"`, float64(s.reloadErr.Load()))
	for _, d := range defs {
		ss := samples[d.name]
		if len(ss) == 0 {
			continue
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", d.name, d.help, d.name, d.typ)
		for _, s := range ss {
			v := strconv.FormatFloat(s.value, 'f', -1, 64)
			if s.labels == "" {
				fmt.Fprintf(w, "%s %s\n", d.name, v)
			} else {
				fmt.Fprintf(w, "%s{%s} %s\n", d.name, s.labels, v)
			}
		}
	}
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func esc(s string) string { return labelEscaper.Replace(s) }

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>homelab lb</title>
<meta http-equiv="refresh" content="5">
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th:first-child,td:first-child{text-align:left}
.up{background:#dfd}.down{background:#fdd}.ejected{background:#fed}.draining,.disabled{background:#eee}
</style></head><body>
<h1>homelab lb</h1>
<p>up {{.Uptime}} · {{.Connections}} connections{{if .MaxConns}} of {{.MaxConns}}{{end}} · {{.Reloads}} reloads ({{.ReloadFails}} rejected) · pipes {{.PipesInUse}} in use / {{.PipesOpen}} open</p>
<h2>Frontends</h2>
<table><tr><th>name</th><th>proto</th><th>listen</th><th>active</th><th>accepted</th><th>bytes in</th><th>bytes out</th><th>rejected</th></tr>
{{range .Frontends}}<tr><td>{{.Name}}</td><td>{{.Protocol}}</td><td>{{range .Listen}}{{.}} {{end}}</td><td>{{.Active}}</td><td>{{.Accepted}}</td><td>{{.BytesIn}}</td><td>{{.BytesOut}}</td><td>{{range $k, $v := .Rejected}}{{$k}}: {{$v}} {{end}}</td></tr>
{{end}}</table>
<h2>Backends</h2>
{{range .Backends}}<h3>{{.Name}} <small>({{.Balance}}{{if .NoServer}}, {{.NoServer}} without server{{end}})</small></h3>
<table><tr><th>server</th><th>state</th><th>weight</th><th>active</th><th>total</th><th>bytes in</th><th>bytes out</th><th>connect errors</th><th>check ms</th><th>last check error</th></tr>
{{range .Servers}}<tr class="{{.State}}"><td>{{.Address}}</td><td>{{.State}}</td><td>{{.Weight}}</td><td>{{.Active}}</td><td>{{.Connections}}</td><td>{{.BytesIn}}</td><td>{{.BytesOut}}</td><td>{{.ConnectErrors}}</td><td>{{printf "%.1f" .CheckMillis}}</td><td>{{.LastCheckErr}}</td></tr>
{{end}}</table>
{{end}}</body></html>
`))

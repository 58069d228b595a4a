package lb

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (string, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(b), resp.Header.Get("Content-Type")
}

func TestAdminEndpoints(t *testing.T) {
	b := startBackend(t, "a")
	dead := closedAddr(t)
	s := startLB(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
limits: {maxConnections: 100}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    deny: [127.0.0.9/32]
    backend: app
backends:
  - name: app
    healthCheck: {type: tcp, interval: 20ms, timeout: 15ms, rise: 1, fall: 1}
    servers:
      - address: %s
      - address: %s
`, b.addr, dead))
	waitFor(t, "the dead server to be marked down", 2*time.Second, func() bool { return serverState(s, "app", dead) == "down" })
	c := dial(t, addr(t, s, "web"))
	c.hello(t)
	c.roundTrip(t, "12345")
	dialFrom(t, "127.0.0.9", addr(t, s, "web")).tryHello()
	base := "http://" + s.AdminAddr().String()

	// Counters move right after each write reaches the socket: the client
	// can see its echo a moment before the counter does.
	var metrics, ctype string
	waitFor(t, "byte counters", 2*time.Second, func() bool {
		metrics, ctype = get(t, base+"/metrics")
		return strings.Contains(metrics, `lb_frontend_bytes_out_total{frontend="web"} 7`)
	})
	if !strings.HasPrefix(ctype, "text/plain") {
		t.Errorf("metrics content type %q", ctype)
	}
	for _, want := range []string{
		"# TYPE lb_frontend_connections_total counter",
		`lb_frontend_connections_total{frontend="web"} 2`,
		`lb_frontend_connections_active{frontend="web"} 1`,
		`lb_frontend_bytes_in_total{frontend="web"} 5`,
		`lb_frontend_bytes_out_total{frontend="web"} 7`, // "a\n" + echo
		`lb_frontend_rejected_total{frontend="web",reason="denied"} 1`,
		fmt.Sprintf(`lb_server_up{backend="app",server=%q} 1`, b.addr),
		fmt.Sprintf(`lb_server_up{backend="app",server=%q} 0`, dead),
		fmt.Sprintf(`lb_server_healthy{backend="app",server=%q} 0`, dead),
		fmt.Sprintf(`lb_server_connections_active{backend="app",server=%q} 1`, b.addr),
		fmt.Sprintf(`lb_server_checks_total{backend="app",server=%q,result="failed"}`, dead),
		fmt.Sprintf(`lb_server_check_duration_seconds{backend="app",server=%q}`, b.addr),
		"lb_connections 1",
		"lb_max_connections 100",
		`lb_reloads_total{result="ok"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", metrics)
	}

	body, ctype := get(t, base+"/status")
	if ctype != "application/json" {
		t.Errorf("status content type %q", ctype)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, body)
	}
	if len(st.Backends) != 1 || len(st.Backends[0].Servers) != 2 || st.Backends[0].Servers[1].State != "down" ||
		st.Backends[0].Servers[0].Active != 1 || st.Frontends[0].Rejected["denied"] != 1 {
		t.Errorf("status = %+v", st)
	}

	page, ctype := get(t, base+"/")
	if !strings.HasPrefix(ctype, "text/html") {
		t.Errorf("page content type %q", ctype)
	}
	for _, want := range []string{"<h1>homelab lb</h1>", b.addr, `class="down"`, "web"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}

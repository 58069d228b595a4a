package pvesim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// answer is a decoded reply.
type answer struct {
	Status int
	Reason string // HTTP reason phrase
	Data   json.RawMessage
	Errors map[string]string
	Msg    string
}

type client struct {
	t    testing.TB
	srv  *Server
	http *http.Client
	auth string
}

func newClient(t testing.TB, opts Options) *client {
	t.Helper()
	srv := Start(t, opts)
	return &client{t: t, srv: srv, http: srv.Client(), auth: srv.AuthHeader()}
}

func (c *client) do(method, p string, params url.Values) answer {
	c.t.Helper()
	u := c.srv.URL + p
	var body io.Reader
	if method == http.MethodGet || method == http.MethodDelete {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else if params != nil {
		body = strings.NewReader(params.Encode())
	}
	rq, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		rq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.auth != "" {
		rq.Header.Set("Authorization", c.auth)
	}
	resp, err := c.http.Do(rq)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, p, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Reason: strings.TrimPrefix(resp.Status, resp.Status[:4])}
	if len(raw) > 0 {
		var env struct {
			Data    json.RawMessage   `json:"data"`
			Errors  map[string]string `json:"errors"`
			Message string            `json:"message"`
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			c.t.Fatalf("%s %s: decoding %q: %v", method, p, raw, err)
		}
		a.Data, a.Errors, a.Msg = env.Data, env.Errors, env.Message
	}
	return a
}

// ok runs a request that must succeed and decodes its data into out.
func (c *client) ok(method, p string, params url.Values, out any) {
	c.t.Helper()
	a := c.do(method, p, params)
	if a.Status != http.StatusOK {
		c.t.Fatalf("%s %s = %d %s %v, want 200", method, p, a.Status, a.Reason, a.Errors)
	}
	if out != nil {
		if err := json.Unmarshal(a.Data, out); err != nil {
			c.t.Fatalf("%s %s: decoding %s: %v", method, p, a.Data, err)
		}
	}
}

// wait polls a task until it stops and returns its exit status.
func (c *client) wait(upid string) string {
	c.t.Helper()
	node := strings.Split(upid, ":")[1]
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var st struct {
			Status     string `json:"status"`
			ExitStatus string `json:"exitstatus"`
		}
		c.ok("GET", "/nodes/"+node+"/tasks/"+url.PathEscape(upid)+"/status", nil, &st)
		if st.Status == "stopped" {
			return st.ExitStatus
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("task %s still running", upid)
	return ""
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func TestSchemaChecks(t *testing.T) {
	c := newClient(t, Options{})
	tests := []struct {
		name       string
		method     string
		path       string
		params     url.Values
		wantStatus int
		wantReason string
		wantErrors map[string]string
	}{
		{
			name: "unknown parameter", method: "GET", path: "/nodes/pve/qemu", params: vals("bogus", "1"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"bogus": msgUnknownParam},
		},
		{
			name: "wrong type", method: "GET", path: "/nodes/pve/tasks/x/log", params: vals("limit", "ten"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"limit": "type check ('integer') failed - got 'ten'"},
		},
		{
			name: "bad enum", method: "GET", path: "/cluster/resources", params: vals("type", "vms"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"type": "value 'vms' does not have a value in the enumeration 'vm, storage, node, sdn'"},
		},
		{
			name: "below minimum", method: "GET", path: "/nodes/pve/qemu/99/config",
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"vmid": "value must have a minimum value of 100"},
		},
		{
			name: "missing required", method: "POST", path: "/cluster/firewall/aliases", params: vals("name", "lab-net1"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"cidr": msgMissingParam},
		},
		{
			name: "bad format", method: "POST", path: "/cluster/firewall/aliases", params: vals("name", "lab-net1", "cidr", "10.0.0.300/24"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"cidr": "invalid format - value does not look like a valid IP address or CIDR network"},
		},
		{
			name: "bad pattern", method: "POST", path: "/cluster/firewall/groups", params: vals("group", "1bad"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"group": "value does not match the regex pattern"},
		},
		{
			name: "unknown key in property string", method: "POST", path: "/nodes/pve/qemu",
			params:     vals("vmid", "100", "net0", "virtio,bridge=vmbr0,colour=red"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"net0": "invalid format - format error: colour: property is not defined in schema and the schema does not allow additional properties"},
		},
		{
			name: "index out of range", method: "POST", path: "/nodes/pve/qemu",
			params:     vals("vmid", "100", "net32", "virtio,bridge=vmbr0"),
			wantStatus: 400, wantReason: "Parameter verification failed.",
			wantErrors: map[string]string{"net32": msgUnknownParam},
		},
		{
			name: "unknown path", method: "GET", path: "/nodes/pve/bogus",
			wantStatus: 501, wantReason: "Method 'GET /nodes/pve/bogus' not implemented",
		},
		{
			name: "unknown method", method: "DELETE", path: "/version",
			wantStatus: 501, wantReason: "Method 'DELETE /version' not implemented",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(c.srv.Violations())
			a := c.do(tt.method, tt.path, tt.params)
			if a.Status != tt.wantStatus || a.Reason != tt.wantReason {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, a.Status, a.Reason, tt.wantStatus, tt.wantReason)
			}
			if a.Msg != tt.wantReason+"\n" {
				t.Errorf("message = %q, want %q", a.Msg, tt.wantReason+"\n")
			}
			if len(a.Errors) != len(tt.wantErrors) {
				t.Errorf("errors = %v, want %v", a.Errors, tt.wantErrors)
			}
			for k, want := range tt.wantErrors {
				if a.Errors[k] != want {
					t.Errorf("errors[%s] = %q, want %q", k, a.Errors[k], want)
				}
			}
			if got := len(c.srv.Violations()); got != before+1 {
				t.Errorf("violations: %d new, want 1", got-before)
			}
		})
	}
}

func TestValidRequestsAreNotViolations(t *testing.T) {
	c := newClient(t, Options{})
	var v struct {
		Version string `json:"version"`
	}
	c.ok("GET", "/version", nil, &v)
	if v.Version == "" {
		t.Errorf("GET /version: empty version")
	}
	var next string
	c.ok("GET", "/cluster/nextid", nil, &next)
	if next != "100" {
		t.Errorf("GET /cluster/nextid = %q, want \"100\"", next)
	}
	c.ok("GET", "/nodes/pve/storage", vals("content", "images"), nil)
	if vs := c.srv.Violations(); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
	if n := c.srv.CallCounts()["GET /cluster/nextid"]; n != 1 {
		t.Errorf("CallCounts[GET /cluster/nextid] = %d, want 1", n)
	}
}

func TestAuth(t *testing.T) {
	opts := Options{Tokens: []Token{
		{ID: "root@pam!admin", Secret: "s3cret"},
		{ID: "homelab@pve!ro", Secret: "ro", Privs: map[string][]string{"/": {"Sys.Audit", "VM.Audit", "Datastore.Audit"}}},
	}}
	c := newClient(t, opts)
	tests := []struct {
		name, auth, method, path string
		params                   url.Values
		wantStatus               int
		wantReason               string
	}{
		{"no header", "", "GET", "/version", nil, 401, "No ticket"},
		{"unknown token", "PVEAPIToken=root@pam!nope=s3cret", "GET", "/version", nil, 401, "no such token 'nope' for user 'root@pam'"},
		{"wrong secret", "PVEAPIToken=root@pam!admin=guess", "GET", "/version", nil, 401, "invalid token value!"},
		{"good token", "PVEAPIToken=root@pam!admin=s3cret", "GET", "/version", nil, 200, "OK"},
		{"read-only reads", "PVEAPIToken=homelab@pve!ro=ro", "GET", "/nodes/pve/status", nil, 200, "OK"},
		{"read-only cannot stop", "PVEAPIToken=homelab@pve!ro=ro", "POST", "/nodes/pve/qemu/100/status/stop", url.Values{}, 403, "Permission check failed (/vms/100, VM.PowerMgmt)"},
		{"read-only cannot create", "PVEAPIToken=homelab@pve!ro=ro", "POST", "/nodes/pve/qemu", vals("vmid", "100"), 403, "Permission check failed (/vms/100, VM.Allocate)"},
		{"read-only cannot add group", "PVEAPIToken=homelab@pve!ro=ro", "POST", "/cluster/firewall/groups", vals("group", "lab-x"), 403, "Permission check failed (/, Sys.Modify)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.auth = tt.auth
			a := c.do(tt.method, tt.path, tt.params)
			if a.Status != tt.wantStatus || a.Reason != tt.wantReason {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, a.Status, a.Reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
	if vs := c.srv.Violations(); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}

func TestMissingSchema(t *testing.T) {
	_, err := New(Options{SchemaPath: "/nonexistent/pve-api-schema-9.1.json"})
	if err == nil || !strings.Contains(err.Error(), "expected at /nonexistent/pve-api-schema-9.1.json") {
		t.Errorf("New with a missing schema: err = %v, want one naming the expected path", err)
	}
}

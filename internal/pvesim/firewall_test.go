package pvesim

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestFirewall(t *testing.T) {
	c := newClient(t, Options{})
	c.ok("POST", "/cluster/firewall/groups", vals("group", "hl-lb", "comment", "homelab lb"), nil)
	c.wantErr("POST", "/cluster/firewall/groups", vals("group", "hl-lb"), 500, "security group 'hl-lb' already exists")
	c.ok("POST", "/cluster/firewall/groups/hl-lb", vals("type", "in", "action", "ACCEPT", "proto", "tcp", "dport", "80,443", "enable", "1"), nil)
	c.ok("POST", "/cluster/firewall/groups/hl-lb", vals("type", "in", "action", "ACCEPT", "proto", "udp", "dport", "51820", "enable", "1"), nil)
	var rules []map[string]any
	c.ok("GET", "/cluster/firewall/groups/hl-lb", nil, &rules)
	// New rules go to the top, as in PVE.
	if len(rules) != 2 || rules[0]["dport"] != "51820" || rules[0]["pos"] != float64(0) || rules[1]["dport"] != "80,443" || rules[1]["enable"] != float64(1) {
		t.Errorf("rules = %v", rules)
	}
	c.ok("PUT", "/cluster/firewall/groups/hl-lb/1", vals("moveto", "0"), nil)
	c.ok("PUT", "/cluster/firewall/groups/hl-lb/1", vals("comment", "wireguard", "delete", "enable"), nil)
	rules = nil
	c.ok("GET", "/cluster/firewall/groups/hl-lb", nil, &rules)
	if rules[0]["dport"] != "80,443" || rules[1]["comment"] != "wireguard" || rules[1]["enable"] != nil {
		t.Errorf("rules after move and edit = %v", rules)
	}
	c.wantErr("DELETE", "/cluster/firewall/groups/hl-lb", nil, 500, "security group 'hl-lb' is not empty")
	c.wantErr("DELETE", "/cluster/firewall/groups/hl-lb/5", nil, 500, "no rule at position 5")
	c.wantErr("POST", "/cluster/firewall/groups/hl-lb", vals("type", "in", "action", "ACCEPT", "proto", "tcpx"), 400, "Parameter verification failed.")

	c.ok("POST", "/cluster/firewall/ipset", vals("name", "hl-net1", "comment", "admin"), nil)
	c.ok("POST", "/cluster/firewall/ipset/hl-net1", vals("cidr", "10.0.1.0/24"), nil)
	c.wantErr("POST", "/cluster/firewall/ipset/hl-net1", vals("cidr", "10.0.1.0/24"), 500, "entry '10.0.1.0/24' already exists")
	c.ok("PUT", "/cluster/firewall/ipset/hl-net1/"+url.PathEscape("10.0.1.0/24"), vals("comment", "net1"), nil)
	var entries []map[string]any
	c.ok("GET", "/cluster/firewall/ipset/hl-net1", nil, &entries)
	if len(entries) != 1 || entries[0]["cidr"] != "10.0.1.0/24" || entries[0]["comment"] != "net1" {
		t.Errorf("ipset entries = %v", entries)
	}
	c.wantErr("DELETE", "/cluster/firewall/ipset/hl-net1", nil, 500, "IPSet 'hl-net1' is not empty")
	c.ok("DELETE", "/cluster/firewall/ipset/hl-net1/"+url.PathEscape("10.0.1.0/24"), nil, nil)
	c.ok("DELETE", "/cluster/firewall/ipset/hl-net1", nil, nil)

	c.ok("POST", "/cluster/firewall/aliases", vals("name", "HL-Net2", "cidr", "10.0.2.0/24"), nil)
	var alias map[string]any
	c.ok("GET", "/cluster/firewall/aliases/hl-net2", nil, &alias)
	if alias["cidr"] != "10.0.2.0/24" || alias["ipversion"] != float64(4) {
		t.Errorf("alias = %v", alias)
	}

	c.ok("PUT", "/cluster/firewall/options", vals("enable", "1", "policy_in", "DROP"), nil)
	var opts map[string]any
	c.ok("GET", "/cluster/firewall/options", nil, &opts)
	if opts["enable"] != float64(1) || opts["policy_in"] != "DROP" {
		t.Errorf("cluster options = %v", opts)
	}

	c.task("POST", "/nodes/pve/qemu", vals("vmid", "120"))
	c.ok("POST", "/nodes/pve/qemu/120/firewall/rules", vals("type", "group", "action", "hl-lb", "enable", "1"), nil)
	c.wantErr("POST", "/nodes/pve/qemu/120/firewall/rules", vals("type", "group", "action", "hl-none"), 500, "security group 'hl-none' does not exist")
	c.ok("PUT", "/nodes/pve/qemu/120/firewall/options", vals("enable", "1", "policy_in", "DROP"), nil)
	snap := c.srv.Snapshot()
	fw := snap.Guests[120].Firewall
	if len(fw.Rules) != 1 || fw.Rules[0]["action"] != "hl-lb" || fw.Options["policy_in"] != "DROP" {
		t.Errorf("guest firewall = %+v", fw)
	}
	c.wantErr("GET", "/nodes/pve/lxc/120/firewall/rules", nil, 500, "Configuration file 'nodes/pve/lxc/120.conf' does not exist")
	if vs := c.srv.Violations(); len(vs) != 1 || vs[0].Params["proto"] != "invalid format - unknown protocol 'tcpx'" {
		t.Errorf("violations = %v, want the one bad rule", vs)
	}
}

func TestNetworkRevertAndManagementGuard(t *testing.T) {
	c := newClient(t, Options{})
	c.ok("POST", "/nodes/pve/network", vals("iface", "vmbr2", "type", "bridge", "autostart", "1"), nil)
	a := c.do("GET", "/nodes/pve/network", nil)
	var raw map[string]any
	if a.Status != 200 {
		t.Fatalf("GET network = %d", a.Status)
	}
	// The top-level "changes" shows pending edits.
	rq, _ := http.NewRequest("GET", c.srv.URL+"/nodes/pve/network", nil)
	rq.Header.Set("Authorization", c.auth)
	resp, err := c.http.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if ch, _ := raw["changes"].(string); !strings.Contains(ch, "+iface vmbr2 (bridge)") {
		t.Errorf("changes = %q, want vmbr2 added", raw["changes"])
	}
	c.ok("DELETE", "/nodes/pve/network", nil, nil)
	c.wantErr("GET", "/nodes/pve/network/vmbr2", nil, 400, "Parameter verification failed.")

	c.ok("PUT", "/nodes/pve/network/vmbr0", vals("type", "bridge", "bridge_ports", "eno2"), nil)
	if c.srv.Snapshot().Nodes["pve"].ManagementCut {
		t.Errorf("management cut before reload")
	}
	c.task("PUT", "/nodes/pve/network", url.Values{})
	if !c.srv.Snapshot().Nodes["pve"].ManagementCut {
		t.Errorf("changing vmbr0's ports and reloading did not mark the management connection cut")
	}
	noViolations(t, c.srv)
}

func TestJSONBody(t *testing.T) {
	c := newClient(t, Options{})
	body := `{"vmid": 130, "name": "mgr", "memory": "2048", "onboot": true, "net0": "virtio,bridge=vmbr0"}`
	rq, _ := http.NewRequest("POST", c.srv.URL+"/nodes/pve/qemu", strings.NewReader(body))
	rq.Header.Set("Content-Type", "application/json")
	rq.Header.Set("Authorization", c.auth)
	resp, err := c.http.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("JSON create = %s", resp.Status)
	}
	g := c.srv.Snapshot().Guests[130]
	if g == nil || g.Config["onboot"] != "1" || g.Config["name"] != "mgr" {
		t.Errorf("guest from JSON body = %+v", g)
	}
	noViolations(t, c.srv)
}

func TestTLSIsVerified(t *testing.T) {
	srv := Start(t, Options{})
	if len(srv.Fingerprint) != 32*3-1 || strings.ToUpper(srv.Fingerprint) != srv.Fingerprint {
		t.Errorf("fingerprint %q is not PVE's AB:CD:... form", srv.Fingerprint)
	}
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	if resp, err := plain.Get(srv.URL + "/version"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without the simulator's CA connected")
	}
	resp, err := srv.Client().Get(srv.URL + "/version")
	if err != nil {
		t.Fatalf("a client trusting the simulator's CA: %v", err)
	}
	resp.Body.Close()
}

func TestHandlersMatchSchema(t *testing.T) {
	srv := Start(t, Options{})
	for _, key := range Simulated() {
		m, tmpl, _ := strings.Cut(key, " ")
		ep, _ := srv.schema.match(splitPath(tmpl))
		if ep == nil || ep.template != tmpl || ep.methods[m] == nil {
			t.Errorf("handler %q is not a method of the 9.1 schema", key)
		}
	}
}

func TestCheckFormat(t *testing.T) {
	tests := []struct {
		format, value string
		ok            bool
	}{
		{"pve-vmid", "100", true},
		{"pve-vmid", "99", false},
		{"pve-node", "pve", true},
		{"pve-node", "-pve", false},
		{"pve-storage-id", "local-lvm", true},
		{"pve-storage-id", "local lvm", false},
		{"pve-configid-list", "net1,scsi2;ipconfig1", true},
		{"pve-configid-list", "net1,bad!", false},
		{"pve-tag-list", "homelab;talos,cp", true},
		{"pve-tag-list", "a$b", false},
		{"ipv4", "10.0.0.1", true},
		{"ipv4", "::1", false},
		{"ipv6", "fd00::1", true},
		{"CIDR", "10.0.0.0/24", true},
		{"CIDR", "10.0.0.0", false},
		{"mac-addr", "BC:24:11:00:00:01", true},
		{"mac-addr", "01:24:11:00:00:01", false},
		{"pve-volume-id", "local:iso/debian.iso", true},
		{"pve-volume-id", "debian.iso", false},
		{"email", "admin@example.com", true},
		{"email", "admin", false},
		{"pve-qm-ipconfig", "ip=10.0.1.5/24,gw=10.0.1.1", true},
		{"pve-qm-ipconfig", "ip=dhcp", true},
		{"pve-qm-ipconfig", "ip=10.0.1.5,gw=10.0.1.1", false},
		{"pve-qm-ipconfig", "address=10.0.1.5/24", false},
		{"pve-qm-cicustom", "user=local:snippets/user.yaml", true},
		{"pve-qm-cicustom", "user=user.yaml", false},
		{"pve-fw-addr-spec", "10.0.1.0/24,+hl-net1,dc/hl-net2", true},
		{"pve-fw-dport-spec", "80,443,8000:8080", true},
		{"pve-fw-dport-spec", "80-443", false},
		{"pve-iface-list", "eno1 eno2", true},
		{"pve-iface", "vmbr1", true},
		{"pve-iface", "1vmbr", false},
	}
	for _, tt := range tests {
		msg := checkFormat(tt.format, tt.value)
		if (msg == "") != tt.ok {
			t.Errorf("checkFormat(%q, %q) = %q, want ok=%v", tt.format, tt.value, msg, tt.ok)
		}
	}
}

// FuzzPropertyString checks that property strings from a request never crash
// the checker and that a valid one stays valid once re-joined.
func FuzzPropertyString(f *testing.F) {
	f.Add("virtio,bridge=vmbr0,firewall=1")
	f.Add("ip=10.0.1.5/24,gw=10.0.1.1")
	f.Add("=,=,,a=b=c")
	f.Fuzz(func(t *testing.T, s string) {
		checkPropertyString(ipconfigFormat, s)
		checkFormat("pve-qm-ipconfig", s)
		checkFormat("pve-fw-addr-spec", s)
		checkFormat("pve-configid-list", s)
		parts, _ := parsePropertyString(s)
		for _, kv := range parts {
			if strings.Contains(kv[0], ",") || strings.Contains(kv[1], ",") {
				t.Errorf("parsePropertyString(%q) kept a comma in %q", s, kv)
			}
		}
	})
}

func TestUploadAndRequires(t *testing.T) {
	c := newClient(t, Options{})
	var buf strings.Builder
	mw := multipart.NewWriter(&buf)
	mw.WriteField("content", "iso")
	fw, _ := mw.CreateFormFile("filename", "cidata-130.iso")
	fw.Write([]byte("nocloud seed"))
	mw.Close()
	rq, _ := http.NewRequest("POST", c.srv.URL+"/nodes/pve/storage/local/upload", strings.NewReader(buf.String()))
	rq.Header.Set("Content-Type", mw.FormDataContentType())
	rq.Header.Set("Authorization", c.auth)
	resp, err := c.http.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Data string }
	json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	if resp.StatusCode != 200 || c.wait(env.Data) != "OK" {
		t.Fatalf("upload = %s %q", resp.Status, env.Data)
	}
	v := c.srv.Snapshot().Volumes["local:iso/cidata-130.iso"]
	if v == nil || string(v.Data) != "nocloud seed" || v.Size != 12 {
		t.Errorf("uploaded volume = %+v", v)
	}

	a := c.do("POST", "/nodes/pve/storage/local/download-url", vals("content", "iso", "filename", "x.iso",
		"url", "https://example.com/x.iso", "checksum", "abc"))
	if a.Status != 400 || a.Errors["checksum-algorithm"] != "missing property - 'checksum' requires this property" {
		t.Errorf("checksum without algorithm = %d %v", a.Status, a.Errors)
	}

	var perms map[string]map[string]int
	c.ok("GET", "/access/permissions", nil, &perms)
	if perms["/"]["VM.Allocate"] != 1 {
		t.Errorf("permissions = %v, want VM.Allocate on /", perms)
	}
}

func TestSchemaPatternsCompile(t *testing.T) {
	// LoadSchema fails on a pattern RE2 cannot compile; every parameter's
	// pattern must therefore be enforced.
	p, err := SchemaPath()
	if err != nil {
		t.Skip(err)
	}
	if _, err := LoadSchema(p); err != nil && !errors.Is(err, ErrNoSchema) {
		t.Fatal(err)
	}
}

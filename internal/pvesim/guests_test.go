package pvesim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// wantErr runs a request that must fail with the given status and reason.
func (c *client) wantErr(method, p string, params url.Values, status int, reason string) {
	c.t.Helper()
	a := c.do(method, p, params)
	if a.Status != status || a.Reason != reason {
		c.t.Errorf("%s %s = %d %q, want %d %q", method, p, a.Status, a.Reason, status, reason)
	}
}

// task runs a request that returns a UPID and waits for the task.
func (c *client) task(method, p string, params url.Values) string {
	c.t.Helper()
	var upid string
	c.ok(method, p, params, &upid)
	if !upidRE.MatchString(upid) {
		c.t.Fatalf("%s %s returned %q, not a UPID", method, p, upid)
	}
	return c.wait(upid)
}

func noViolations(t *testing.T, srv *Server) {
	t.Helper()
	for _, v := range srv.Violations() {
		t.Errorf("violation: %s", v)
	}
}

func TestQEMULifecycle(t *testing.T) {
	c := newClient(t, Options{
		TaskLatency:    map[string]time.Duration{"qmcreate": 2 * time.Second},
		TimeScale:      0.02, // 2s -> 40ms
		AgentBootDelay: time.Hour,
	})
	if got := c.task("POST", "/nodes/pve/storage/local/download-url", vals(
		"content", "import", "filename", "talos-nocloud-amd64.raw",
		"url", "https://factory.talos.dev/image/abc/v1.11.0/nocloud-amd64.raw")); got != "OK" {
		t.Fatalf("download-url task = %q, want OK", got)
	}
	var content []map[string]any
	c.ok("GET", "/nodes/pve/storage/local/content", vals("content", "import"), &content)
	if len(content) != 1 || content[0]["volid"] != "local:import/talos-nocloud-amd64.raw" {
		t.Fatalf("storage content = %v, want the downloaded image", content)
	}

	create := vals(
		"vmid", "100", "name", "talos-cp-1", "memory", "4096", "cores", "2", "cpu", "host",
		"scsihw", "virtio-scsi-single", "balloon", "0", "agent", "1",
		"scsi0", "local-lvm:0,import-from=local:import/talos-nocloud-amd64.raw,discard=on,iothread=1",
		"ide2", "local-lvm:cloudinit", "net0", "virtio,bridge=vmbr1,firewall=1",
		"ipconfig0", "ip=10.0.1.11/24,gw=10.0.1.1", "tags", "homelab;talos", "boot", "order=scsi0",
	)
	var upid string
	c.ok("POST", "/nodes/pve/qemu", create, &upid)
	c.wantErr("PUT", "/nodes/pve/qemu/100/config", vals("memory", "8192"), 500, "VM is locked (create)")
	c.wantErr("POST", "/nodes/pve/qemu", create, 500, "VM 100 already exists on node 'pve'")
	c.wantErr("GET", "/cluster/nextid", vals("vmid", "100"), 400, "Parameter verification failed.")
	if got := c.wait(upid); got != "OK" {
		t.Fatalf("qmcreate = %q, want OK", got)
	}

	var conf map[string]any
	conf = nil
	c.ok("GET", "/nodes/pve/qemu/100/config", nil, &conf)
	for key, prefix := range map[string]string{
		"scsi0": "local-lvm:vm-100-disk-0,", "ide2": "local-lvm:vm-100-cloudinit,media=cdrom",
		"net0": "virtio=BC:24:11:", "tags": "homelab;talos", "name": "talos-cp-1",
	} {
		if s, _ := conf[key].(string); !strings.HasPrefix(s, prefix) {
			t.Errorf("config[%s] = %v, want prefix %q", key, conf[key], prefix)
		}
	}
	if conf["memory"] != "4096" && conf["memory"] != float64(4096) {
		t.Errorf("config[memory] = %v, want 4096", conf["memory"])
	}
	if conf["digest"] == nil {
		t.Errorf("config has no digest")
	}
	if got := c.task("PUT", "/nodes/pve/qemu/100/resize", vals("disk", "scsi0", "size", "+1G")); got != "OK" {
		t.Fatalf("resize = %q", got)
	}
	c.wantErr("PUT", "/nodes/pve/qemu/100/resize", vals("disk", "scsi0", "size", "1G"), 500, "shrinking disks is not supported")
	c.wantErr("PUT", "/nodes/pve/qemu/100/resize", vals("disk", "scsi1", "size", "+1G"), 500, "disk 'scsi1' does not exist")
	if v := c.srv.Snapshot().Volumes["local-lvm:vm-100-disk-0"]; v == nil || v.Size != DefaultDownloadSize+1<<30 {
		t.Errorf("disk after resize = %+v, want %d bytes", v, DefaultDownloadSize+1<<30)
	}
	conf = nil
	c.ok("GET", "/nodes/pve/qemu/100/config", nil, &conf)
	if s, _ := conf["scsi0"].(string); !strings.HasSuffix(s, ",size=2G") || !strings.Contains(s, "discard=on") {
		t.Errorf("scsi0 after resize = %q", s)
	}
	var res []map[string]any
	c.ok("GET", "/cluster/resources", vals("type", "vm"), &res)
	if len(res) != 1 || res[0]["id"] != "qemu/100" || res[0]["tags"] != "homelab;talos" || res[0]["node"] != "pve" {
		t.Errorf("cluster resources = %v, want qemu/100 with its tags", res)
	}

	// The bridge is not there yet: start fails like PVE's.
	if got := c.task("POST", "/nodes/pve/qemu/100/status/start", url.Values{}); got != "bridge 'vmbr1' does not exist" {
		t.Errorf("start without bridge = %q", got)
	}
	c.ok("POST", "/nodes/pve/network", vals("iface", "vmbr1", "type", "bridge", "autostart", "1",
		"cidr", "10.0.1.1/24", "comments", "homelab:net1"), nil)
	a := c.do("GET", "/nodes/pve/network", vals("type", "bridge"))
	var ifaces []map[string]any
	json.Unmarshal(a.Data, &ifaces)
	if len(ifaces) != 2 || ifaces[1]["iface"] != "vmbr1" || ifaces[1]["active"] != nil {
		t.Errorf("staged network = %v, want inactive vmbr1", ifaces)
	}
	c.wantErr("POST", "/nodes/pve/network", vals("iface", "vmbr1", "type", "bridge"), 400, "Parameter verification failed.")
	if got := c.task("PUT", "/nodes/pve/network", url.Values{}); got != "OK" {
		t.Fatalf("network reload = %q", got)
	}
	conf = nil
	c.ok("GET", "/nodes/pve/network/vmbr1", nil, &conf)
	if conf["active"] != float64(1) || conf["address"] != "10.0.1.1" {
		t.Errorf("vmbr1 after reload = %v, want active with address 10.0.1.1", conf)
	}

	if got := c.task("POST", "/nodes/pve/qemu/100/status/start", url.Values{}); got != "OK" {
		t.Fatalf("start = %q", got)
	}
	c.wantErr("POST", "/nodes/pve/qemu/100/status/start", url.Values{}, 500, "VM 100 already running")
	conf = nil
	c.ok("GET", "/nodes/pve/qemu/100/status/current", nil, &conf)
	if conf["status"] != "running" || conf["agent"] != float64(1) {
		t.Errorf("status = %v, want running with agent", conf)
	}
	c.wantErr("POST", "/nodes/pve/qemu/100/agent/ping", url.Values{}, 500, "QEMU guest agent is not running")
	c.srv.SetAgentBootDelay(0)
	c.ok("POST", "/nodes/pve/qemu/100/agent/ping", url.Values{}, nil)
	var ni struct {
		Result []struct {
			Name  string `json:"name"`
			Addrs []struct {
				IP string `json:"ip-address"`
			} `json:"ip-addresses"`
		} `json:"result"`
	}
	c.ok("GET", "/nodes/pve/qemu/100/agent/network-get-interfaces", nil, &ni)
	if len(ni.Result) != 2 || ni.Result[1].Addrs[0].IP != "10.0.1.11" {
		t.Errorf("guest interfaces = %+v, want eth0 with 10.0.1.11", ni)
	}

	c.wantErr("DELETE", "/nodes/pve/qemu/100", nil, 500, "VM 100 is running - destroy failed")
	if got := c.task("POST", "/nodes/pve/qemu/100/status/shutdown", url.Values{}); got != "OK" {
		t.Fatalf("shutdown = %q", got)
	}
	if got := c.task("DELETE", "/nodes/pve/qemu/100", vals("purge", "1", "destroy-unreferenced-disks", "1")); got != "OK" {
		t.Fatalf("destroy = %q", got)
	}
	c.wantErr("GET", "/nodes/pve/qemu/100/config", nil, 500, "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist")
	c.wantErr("DELETE", "/nodes/pve/qemu/100", nil, 500, "unable to find configuration file for VM 100 on node 'pve'")
	for id := range c.srv.Snapshot().Volumes {
		if strings.Contains(id, "vm-100-") {
			t.Errorf("volume %s left after destroy", id)
		}
	}
	noViolations(t, c.srv)
}

func TestLXCLifecycle(t *testing.T) {
	c := newClient(t, Options{})
	var tmpls []map[string]any
	c.ok("GET", "/nodes/pve/aplinfo", nil, &tmpls)
	tmpl := tmpls[0]["template"].(string)
	if got := c.task("POST", "/nodes/pve/aplinfo", vals("storage", "local", "template", tmpl)); got != "OK" {
		t.Fatalf("template download = %q", got)
	}
	c.wantErr("POST", "/nodes/pve/lxc", vals("vmid", "101", "ostemplate", "local:vztmpl/nope.tar.zst"), 500, "volume 'local:vztmpl/nope.tar.zst' does not exist")
	c.wantErr("POST", "/nodes/pve/lxc", vals("vmid", "101", "ostemplate", "local:vztmpl/"+tmpl, "rootfs", "nfs:8"), 500, "storage 'nfs' does not exist")
	create := vals("vmid", "101", "ostemplate", "local:vztmpl/"+tmpl, "hostname", "lb",
		"rootfs", "local-lvm:2", "memory", "256", "swap", "0", "unprivileged", "1", "features", "nesting=1",
		"net0", "name=eth0,bridge=vmbr0,ip=192.168.1.50/24,gw=192.168.1.1", "tags", "homelab",
		"ssh-public-keys", "ssh-ed25519 AAAA test", "onboot", "1")
	if got := c.task("POST", "/nodes/pve/lxc", create); got != "OK" {
		t.Fatalf("vzcreate = %q", got)
	}
	var conf map[string]any
	conf = nil
	c.ok("GET", "/nodes/pve/lxc/101/config", nil, &conf)
	if s, _ := conf["rootfs"].(string); s != "local-lvm:vm-101-disk-0,size=2G" {
		t.Errorf("rootfs = %v", conf["rootfs"])
	}
	if s, _ := conf["net0"].(string); !strings.Contains(s, "hwaddr=BC:24:11:") {
		t.Errorf("net0 = %v, want a generated hwaddr", conf["net0"])
	}
	if conf["ostype"] != "debian" || conf["hostname"] != "lb" || conf["ssh-public-keys"] != nil {
		t.Errorf("config = %v", conf)
	}
	c.ok("PUT", "/nodes/pve/lxc/101/config", vals("memory", "512", "delete", "swap"), nil)
	conf = nil
	c.ok("GET", "/nodes/pve/lxc/101/config", nil, &conf)
	if conf["memory"] != float64(512) || conf["swap"] != nil {
		t.Errorf("config after update = %v", conf)
	}
	c.wantErr("POST", "/nodes/pve/lxc/101/config", vals("memory", "512"), 501, "Method 'POST /nodes/pve/lxc/101/config' not implemented")
	if got := c.task("POST", "/nodes/pve/lxc/101/status/start", url.Values{}); got != "OK" {
		t.Fatalf("vzstart = %q", got)
	}
	conf = nil
	c.ok("GET", "/nodes/pve/lxc/101/status/current", nil, &conf)
	if conf["status"] != "running" || conf["name"] != "lb" {
		t.Errorf("status = %v", conf)
	}
	if got := c.task("POST", "/nodes/pve/lxc/101/status/stop", url.Values{}); got != "OK" {
		t.Fatalf("vzstop = %q", got)
	}
	if got := c.task("DELETE", "/nodes/pve/lxc/101", vals("purge", "1")); got != "OK" {
		t.Fatalf("vzdestroy = %q", got)
	}
	var list []map[string]any
	c.ok("GET", "/nodes/pve/lxc", nil, &list)
	if len(list) != 0 {
		t.Errorf("containers after destroy = %v", list)
	}
	// The one schema violation above (POST config on a container) is recorded.
	if vs := c.srv.Violations(); len(vs) != 1 || vs[0].Kind != "method" {
		t.Errorf("violations = %v, want the one POST on a container's config", vs)
	}
}

func TestTaskFailure(t *testing.T) {
	c := newClient(t, Options{})
	c.srv.FailNextTask("qmcreate", "unable to create VM 100 - lvcreate 'pve/vm-100-disk-0' error: injected")
	var upid string
	c.ok("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:8"), &upid)
	if got := c.wait(upid); got != "unable to create VM 100 - lvcreate 'pve/vm-100-disk-0' error: injected" {
		t.Errorf("exitstatus = %q", got)
	}
	var log []struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	c.ok("GET", "/nodes/pve/tasks/"+url.PathEscape(upid)+"/log", nil, &log)
	if len(log) == 0 || log[len(log)-1].T != "TASK ERROR: unable to create VM 100 - lvcreate 'pve/vm-100-disk-0' error: injected" {
		t.Errorf("task log = %v", log)
	}
	c.wantErr("GET", "/nodes/pve/qemu/100/config", nil, 500, "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist")
	if got := c.task("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:8")); got != "OK" {
		t.Errorf("second create = %q, want OK", got)
	}
	noViolations(t, c.srv)
}

func TestFaults(t *testing.T) {
	c := newClient(t, Options{})
	c.srv.FailNext("GET", "/version", 2, 503, "service unavailable")
	c.wantErr("GET", "/version", nil, 503, "service unavailable")
	c.wantErr("GET", "/version", nil, 503, "service unavailable")
	c.ok("GET", "/version", nil, nil)

	c.srv.DropNext("POST", "/nodes/{node}/qemu", 1)
	rq, _ := http.NewRequest("POST", c.srv.URL+"/nodes/pve/qemu", strings.NewReader("vmid=100"))
	rq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rq.Header.Set("Authorization", c.auth)
	if resp, err := c.http.Do(rq); err == nil {
		resp.Body.Close()
		t.Errorf("dropped request answered %s", resp.Status)
	}
	if _, ok := c.srv.Snapshot().Guests[100]; ok {
		t.Errorf("dropped create changed the state")
	}
	c.task("POST", "/nodes/pve/qemu", vals("vmid", "100"))

	c.wantErr("GET", "/nodes/nope/qemu", nil, 500, "no such node 'nope'")
	c.wantErr("GET", "/nodes/pve/storage/nfs/content", nil, 500, "storage 'nfs' does not exist")
	noViolations(t, c.srv)
}

func TestLatencyTimeScale(t *testing.T) {
	c := newClient(t, Options{TaskLatency: map[string]time.Duration{"download": 20 * time.Second}, TimeScale: 0.005})
	start := time.Now()
	var upid string
	c.ok("POST", "/nodes/pve/storage/local/download-url", vals("content", "iso", "filename", "debian.iso", "url", "https://example.com/debian.iso"), &upid)
	var st map[string]any
	c.ok("GET", "/nodes/pve/tasks/"+url.PathEscape(upid)+"/status", nil, &st)
	if st["status"] != "running" {
		t.Errorf("download status right after start = %v, want running", st["status"])
	}
	if got := c.wait(upid); got != "OK" {
		t.Fatalf("download = %q", got)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Errorf("20s download at scale 0.005 took %v, want about 100ms", d)
	}

	c.srv.SetCallLatency("GET", "/version", 10*time.Second)
	start = time.Now()
	c.ok("GET", "/version", nil, nil)
	if d := time.Since(start); d < 50*time.Millisecond || d > 3*time.Second {
		t.Errorf("10s call latency at scale 0.005 took %v, want about 50ms", d)
	}
	start = time.Now()
	c.ok("GET", "/cluster/nextid", nil, nil)
	if d := time.Since(start); d > 40*time.Millisecond {
		t.Errorf("unmatched call took %v", d)
	}
	noViolations(t, c.srv)
}

func TestNodesAndStoragesAreConfigurable(t *testing.T) {
	c := newClient(t, Options{
		Nodes:    []string{"pve1", "pve2"},
		Storages: []StorageConfig{{ID: "tank", Type: "zfspool", Content: []string{"images", "rootdir"}, Total: 1 << 40}},
	})
	var nodes []map[string]any
	c.ok("GET", "/nodes", nil, &nodes)
	if len(nodes) != 2 || nodes[0]["node"] != "pve1" || nodes[1]["node"] != "pve2" {
		t.Errorf("nodes = %v", nodes)
	}
	c.wantErr("POST", "/nodes/pve2/qemu", vals("vmid", "100", "scsi0", "local-lvm:8"), 500, "storage 'local-lvm' does not exist")
	if got := c.task("POST", "/nodes/pve2/qemu", vals("vmid", "100", "scsi0", "tank:8")); got != "OK" {
		t.Fatalf("create on pve2 = %q", got)
	}
	var res []map[string]any
	c.ok("GET", "/cluster/resources", vals("type", "vm"), &res)
	if len(res) != 1 || res[0]["node"] != "pve2" {
		t.Errorf("resources = %v", res)
	}
	c.wantErr("GET", "/nodes/pve1/qemu/100/config", nil, 500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist")
	c.wantErr("POST", "/nodes/pve1/qemu", vals("vmid", "100"), 500, "VM 100 already exists on node 'pve2'")
	var next string
	c.ok("GET", "/cluster/nextid", nil, &next)
	if next != "101" {
		t.Errorf("nextid = %q, want 101", next)
	}
	noViolations(t, c.srv)
}

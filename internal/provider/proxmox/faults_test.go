package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/pvesim"
)

// guestsByName counts the simulator's guests per name.
func guestsByName(srv *pvesim.Server) map[string][]int {
	out := map[string][]int{}
	for id, g := range srv.Snapshot().Guests {
		n := g.Config["name"]
		if g.Type == "lxc" {
			n = g.Config["hostname"]
		}
		out[n] = append(out[n], id)
	}
	return out
}

func checkNoDuplicates(t *testing.T, srv *pvesim.Server) {
	t.Helper()
	for n, ids := range guestsByName(srv) {
		if len(ids) > 1 {
			t.Errorf("guest %s exists %d times: %v", n, len(ids), ids)
		}
	}
}

// mustConverge applies until nothing is left to do, at most twice: a
// request the interrupted run had in flight may still land on the server
// after the first converging apply read the state (as on a real host),
// and the next plan then repairs it.
func mustConverge(t *testing.T, f *fixture, p *Provider) {
	t.Helper()
	ctx := context.Background()
	for i := 1; ; i++ {
		if pl, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
			t.Fatalf("apply #%d after the fault: %v\nplan:\n%s", i, err, describe(pl))
		}
		pl, err := planFor(ctx, p, f.lab, f.arts, false)
		if err != nil {
			t.Fatal(err)
		}
		if pl.Empty() {
			break
		}
		if i == 2 {
			t.Fatalf("plan after two converging applies is not empty:\n%s", describe(pl))
		}
		t.Logf("plan after the first converging apply:\n%s", describe(pl))
	}
	checkNoDuplicates(t, f.srv)
	if want := len(f.lab.Machines()); len(guestsByName(f.srv)) != want {
		t.Errorf("simulator has %d guests, want %d", len(guestsByName(f.srv)), want)
	}
}

func TestFaultsThenConverge(t *testing.T) {
	tests := []struct {
		name   string
		inject func(srv *pvesim.Server)
		// want is a line the failed apply's error must hold.
		want string
	}{
		{
			name:   "5xx on every try",
			inject: func(srv *pvesim.Server) { srv.FailNext("POST", "/nodes/{node}/qemu", 4*3, 500, "got timeout") }, // 4 VMs, 3 attempts each
			want:   "create vm/lab-cp-1: creating vm/lab-cp-1: POST /nodes/pve/qemu: 500 got timeout",
		},
		{
			name:   "failed task",
			inject: func(srv *pvesim.Server) { srv.FailNextTask("download", "download failed: 404 Not Found") },
			want:   "failed: download failed: 404 Not Found",
		},
		{
			name:   "dropped connection",
			inject: func(srv *pvesim.Server) { srv.DropNext("POST", "/nodes/{node}/lxc", 5) },
			want:   "POST /nodes/pve/lxc: EOF",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, pvesim.Options{})
			p := f.provider(t)
			tt.inject(f.srv)
			pl, err := converge(context.Background(), p, f.lab, f.arts, false)
			if err == nil {
				t.Fatalf("apply with an injected fault succeeded\nplan:\n%s", describe(pl))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("apply error = %v\nwant it to hold %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "run apply again to converge") {
				t.Errorf("apply error does not say how to go on: %v", err)
			}
			mustConverge(t, f, p)
			checkViolations(t, f.srv)
		})
	}
}

func TestTaskFailureShowsLog(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	if _, err := p.Desired(f.lab, f.arts); err != nil {
		t.Fatal(err)
	}
	f.srv.FailNextTask("download", "download failed: 404 Not Found")
	r := p.want["image/local:import/debian-12-genericcloud-amd64.qcow2"].res
	err := p.Create(ctx, r)
	want := "creating image/local:import/debian-12-genericcloud-amd64.qcow2: task download debian-12-genericcloud-amd64.qcow2 failed: download failed: 404 Not Found\n    task log (last lines):\n"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Create() error = %v\nwant it to start with %q", err, want)
	}
	if !strings.Contains(err.Error(), "\n    | TASK ERROR: download failed: 404 Not Found") {
		t.Errorf("error does not show the task log's last line:\n%v", err)
	}
	if apply.IsTransient(err) {
		t.Errorf("a failed task is not worth retrying as is")
	}
}

func TestCrashBetweenSteps(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	// Slow guest creation, then "crash" (cancel) while guests are being made.
	f.srv.SetTaskLatency("qmcreate", 200*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if len(guestsByName(f.srv)) >= 2 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := converge(ctx, p, f.lab, f.arts, false)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("interrupted apply error = %v, want a cancellation", err)
	}
	f.srv.SetTaskLatency("qmcreate", time.Second)
	mustConverge(t, f, p)
	checkViolations(t, f.srv)
}

func TestDestroyAndForeignGuest(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	// A guest that is not the lab's, with a lab-like name.
	form := url.Values{"vmid": {"300"}, "name": {"lab-cp-9"}, "memory": {"512"}, "tags": {"homelab;other"}}
	if err := p.api.Post(ctx, "/nodes/pve/qemu", form, nil); err != nil {
		t.Fatal(err)
	}
	before := f.srv.Snapshot().Guests[300]
	if pl, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
		t.Fatalf("apply: %v\n%s", err, describe(pl))
	}
	var status strings.Builder
	if err := p.Status(ctx, &status); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"proxmox node pve", "lab-cp-1", "lab-vpn", "vmid 200", "running"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("Status() = %q, want it to mention %q", status.String(), want)
		}
	}
	if strings.Contains(status.String(), "lab-cp-9") {
		t.Errorf("Status() lists the foreign guest: %q", status.String())
	}
	// A destroy as the command line does it: a fresh provider, no Desired.
	fresh, err := New(ctx, f.lab, f.options())
	if err != nil {
		t.Fatal(err)
	}
	obsFresh, err := fresh.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range obsFresh {
		if r.Type == tImage || r.Type == tTemplate {
			t.Errorf("Observe without Desired reports %s; a destroy would delete a kept image", r.ID())
		}
	}
	pl, err := plan.Make(nil, obsFresh, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply.Run(ctx, pl, fresh, apply.Options{Parallel: 8, Backoff: time.Millisecond}); err != nil {
		t.Fatalf("destroy: %v\n%s", err, describe(pl))
	}
	snap := f.srv.Snapshot()
	if len(snap.Guests) != 1 || snap.Guests[300] == nil {
		t.Errorf("after destroy the guests are %v, want only the foreign guest 300", mapsKeys(snap.Guests))
	} else if fmt.Sprint(snap.Guests[300].Config) != fmt.Sprint(before.Config) {
		t.Errorf("foreign guest changed: %v -> %v", before.Config, snap.Guests[300].Config)
	}
	for _, c := range f.srv.Calls() {
		if strings.Contains(c.Path, "/300") && c.Method != "GET" {
			t.Errorf("the provider sent %s %s to the foreign guest", c.Method, c.Path)
		}
	}
	// Nothing of the lab's is left but the kept images.
	obs, err := p.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, r := range obs {
		if r.Type != tImage && r.Type != tTemplate {
			left = append(left, r.ID())
		}
	}
	if len(left) > 0 {
		t.Errorf("destroy left lab objects: %v", left)
	}
	kept, _ := p.Kept(ctx)
	if len(kept) != 3 {
		t.Errorf("Kept() = %v, want the two images and the template", kept)
	}
	for id := range snap.Nodes["pve"].Pending {
		t.Errorf("pending network change left: %s", id)
	}
	for _, n := range []string{"vmbr1", "vmbr2"} {
		if _, ok := snap.Nodes["pve"].Running[n]; ok {
			t.Errorf("bridge %s is still there", n)
		}
	}
	if len(snap.Groups) != 0 || len(snap.IPSets) != 0 {
		t.Errorf("firewall groups %v or IP sets %v left", mapsKeys(snap.Groups), mapsKeys(snap.IPSets))
	}
	checkViolations(t, f.srv)

	// With PurgeImages the images go too.
	o := f.options()
	o.PurgeImages = true
	p2, err := New(ctx, f.lab, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := converge(ctx, p2, f.lab, f.arts, true); err != nil {
		t.Fatal(err)
	}
	for id, v := range f.srv.Snapshot().Volumes {
		if v.Content == "import" || v.Content == "vztmpl" {
			t.Errorf("volume %s left after destroy with PurgeImages", id)
		}
	}
}

func TestVMIDTakenByForeignGuest(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	if err := p.api.Post(ctx, "/nodes/pve/qemu", url.Values{"vmid": {"110"}, "name": {"someone-else"}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := converge(ctx, p, f.lab, f.arts, false)
	want := `create vm/lab-manager: creating vm/lab-manager: VMID 110 is already used by guest "someone-else", which is not lab-manager of lab lab`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("apply error = %v\nwant it to hold %s", err, want)
	}
	if g := f.srv.Snapshot().Guests[110]; g == nil || g.Config["name"] != "someone-else" {
		t.Errorf("guest 110 was changed: %+v", g)
	}
}

func TestMinimalPrivileges(t *testing.T) {
	tok := pvesim.Token{ID: "homelab@pve!homelab", Secret: "5f0c8a5e-0000-4000-8000-000000000001",
		Privs: map[string][]string{"/": Privileges}}
	f := newFixture(t, pvesim.Options{Tokens: []pvesim.Token{tok}})
	p := f.provider(t)
	ctx := context.Background()
	if pl, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
		t.Fatalf("apply with the documented privileges: %v\n%s", err, describe(pl))
	}
	if pl, err := converge(ctx, p, f.lab, f.arts, true); err != nil {
		t.Fatalf("destroy with the documented privileges: %v\n%s", err, describe(pl))
	}
	checkViolations(t, f.srv)
}

func TestMissingPrivilege(t *testing.T) {
	privs := slices.DeleteFunc(slices.Clone(Privileges), func(s string) bool { return s == "VM.Allocate" })
	tok := pvesim.Token{ID: "homelab@pve!homelab", Secret: "5f0c8a5e-0000-4000-8000-000000000002",
		Privs: map[string][]string{"/": privs}}
	f := newFixture(t, pvesim.Options{Tokens: []pvesim.Token{tok}})
	p := f.provider(t)
	ctx := context.Background()
	if _, err := p.Desired(f.lab, f.arts); err != nil {
		t.Fatal(err)
	}
	err := p.Create(ctx, p.want["vm/lab-manager"].res)
	want := `creating vm/lab-manager: token "homelab@pve!homelab" lacks privilege VM.Allocate on /vms/110`
	if err == nil || err.Error() != want {
		t.Fatalf("Create() error = %v\nwant %s", err, want)
	}
	if h := hintOf(err); !strings.Contains(h, "pveum acl modify /vms/110 --tokens 'homelab@pve!homelab' --roles HomelabProvisioner") {
		t.Errorf("hint = %q", h)
	}
	var ae interface{ Temporary() bool }
	if errors.As(err, &ae) && ae.Temporary() {
		t.Errorf("a refused privilege is not temporary")
	}
}

func mapsKeys[K comparable, V any](m map[K]V) []K {
	var out []K
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestManagementBridgeGuard(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	// An owned bridge that (wrongly) carries the address the API is reached on.
	form := url.Values{"iface": {"vmbr1"}, "type": {"bridge"}, "cidr": {"127.0.0.1/8"}, "autostart": {"1"}, "comments": {"homelab:lab"}}
	if err := p.api.Post(ctx, "/nodes/pve/network", form, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.task(ctx, "PUT", "/nodes/pve/network", nil); err != nil {
		t.Fatal(err)
	}
	pl, err := planFor(ctx, p, f.lab, f.arts, false)
	if err != nil {
		t.Fatal(err)
	}
	var step *plan.Step
	for i := range pl.Steps {
		if pl.Steps[i].ID == "bridge/vmbr1" {
			step = &pl.Steps[i]
		}
	}
	if step == nil || step.Action != plan.Update {
		t.Fatalf("plan has no update of bridge/vmbr1:\n%s", describe(pl))
	}
	err = p.Update(ctx, *step.Desired, *step.Observed)
	want := "updating bridge/vmbr1: refusing to change bridge vmbr1: it carries the host's management address 127.0.0.1 (the API endpoint)"
	if err == nil || err.Error() != want {
		t.Fatalf("Update() error = %v\nwant %s", err, want)
	}
	if err := p.Delete(ctx, *step.Observed); err == nil || !strings.Contains(err.Error(), "refusing to change bridge vmbr1") {
		t.Fatalf("Delete() error = %v, want the guard's refusal", err)
	}
	snap := f.srv.Snapshot()
	if got := snap.Nodes["pve"].Running["vmbr1"].Params["cidr"]; got != "127.0.0.1/8" {
		t.Errorf("vmbr1 cidr = %q, want it untouched", got)
	}
	if snap.Nodes["pve"].ManagementCut {
		t.Errorf("the management connection was cut")
	}
}

func TestForeignBridgeNotTakenOver(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	form := url.Values{"iface": {"vmbr2"}, "type": {"bridge"}, "autostart": {"1"}, "comments": {"someone's bridge"}}
	if err := p.api.Post(ctx, "/nodes/pve/network", form, nil); err != nil {
		t.Fatal(err)
	}
	_, err := p.Observe(ctx)
	want := `bridge vmbr2 for network apps exists on node pve but is not lab lab's (its comment is not "homelab:lab")`
	if err == nil || err.Error() != want {
		t.Fatalf("Observe() error = %v\nwant %s", err, want)
	}
	// And a missing uplink bridge.
	f.lab.Networks[0].Bridge = "vmbr9"
	_, err = p.Observe(ctx)
	want = "bridge vmbr9 of network wan does not exist on node pve"
	if err == nil || err.Error() != want {
		t.Fatalf("Observe() error = %v\nwant %s", err, want)
	}
}

func TestRefreshShowsDrift(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	if pl, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
		t.Fatalf("apply: %v\n%s", err, describe(pl))
	}
	o := f.options()
	o.Refresh = true
	deep, err := New(ctx, f.lab, o)
	if err != nil {
		t.Fatal(err)
	}
	if pl, err := planFor(ctx, deep, f.lab, f.arts, false); err != nil || !pl.Empty() {
		t.Fatalf("refresh plan after apply = %v, %v; want empty\n%s", pl, err, describe(pl))
	}
	// A hand edit in the web UI: worker-1's apps NIC moved to the admin bridge.
	if err := p.api.Put(ctx, "/nodes/pve/qemu/210/config", url.Values{"net1": {"virtio=02:00:00:00:00:01,bridge=vmbr1,firewall=1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if pl, err := planFor(ctx, p, f.lab, f.arts, false); err != nil || !pl.Empty() {
		t.Fatalf("the fast plan is expected not to see NIC edits; got %v\n%s", err, describe(pl))
	}
	pl, err := planFor(ctx, deep, f.lab, f.arts, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Steps) != 1 || pl.Steps[0].ID != "vm/lab-worker-1" || pl.Steps[0].Action != plan.Update {
		t.Fatalf("refresh plan = \n%s\nwant one update of vm/lab-worker-1", describe(pl))
	}
	if _, err := converge(ctx, deep, f.lab, f.arts, false); err != nil {
		t.Fatal(err)
	}
	if pl, err := planFor(ctx, deep, f.lab, f.arts, false); err != nil || !pl.Empty() {
		t.Fatalf("refresh plan after the repair is not empty: %v\n%s", err, describe(pl))
	}
	checkViolations(t, f.srv)
}

func TestDriftFastPath(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	if pl, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
		t.Fatalf("apply: %v\n%s", err, describe(pl))
	}
	// Hand edits: more memory on worker-1, a bigger disk on worker-2.
	if err := p.api.Put(ctx, "/nodes/pve/qemu/210/config", url.Values{"memory": {"8192"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.task(ctx, "PUT", "/nodes/pve/qemu/211/resize", url.Values{"disk": {"scsi0"}, "size": {"90G"}}); err != nil {
		t.Fatal(err)
	}
	pl, err := planFor(ctx, p, f.lab, f.arts, false)
	if err != nil {
		t.Fatal(err)
	}
	got := describe(pl)
	want := "  update vm/lab-worker-1 [memory: \"8192\" -> \"4096\"]\n  update vm/lab-worker-2 [disk: \"90G\" -> \"80G\"]\n"
	if got != want {
		t.Fatalf("plan after hand edits:\n%s\nwant:\n%s", got, want)
	}
	_, err = apply.Run(ctx, pl, p, apply.Options{Backoff: time.Millisecond})
	wantErr := "update vm/lab-worker-2: updating vm/lab-worker-2: the disk of lab-worker-2 is 90G, larger than the 80G the lab asks for, and disks only grow"
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("apply error = %v\nwant it to hold %s", err, wantErr)
	}
	if m := f.srv.Snapshot().Guests[210].Config["memory"]; m != "4096" {
		t.Errorf("worker-1 memory = %s after apply, want 4096", m)
	}
	checkViolations(t, f.srv)
}

// TestCreateTwice is a create whose answer was lost: the object exists,
// the step is run again, and it must converge instead of failing.
func TestCreateTwice(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	if _, err := p.Desired(f.lab, f.arts); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"bridge/vmbr1", "fw-ipset/lab-admin", "fw-group/lab-cp", "image/local:import/debian-12-genericcloud-amd64.qcow2", "template/debian-12-standard"} {
		for i := 1; i <= 2; i++ {
			if err := p.Create(ctx, p.want[id].res); err != nil {
				t.Errorf("Create(%s) #%d: %v", id, i, err)
			}
		}
	}
	snap := f.srv.Snapshot()
	if n := len(snap.Groups["lab-cp"].Rules); n != len(p.want["fw-group/lab-cp"].rules) {
		t.Errorf("group lab-cp has %d rules after two creates, want %d", n, len(p.want["fw-group/lab-cp"].rules))
	}
	if n := len(snap.IPSets["lab-admin"].Entries); n != 1 {
		t.Errorf("IP set lab-admin has %d entries after two creates, want 1", n)
	}
	checkViolations(t, f.srv)
}

func TestStartTimeout(t *testing.T) {
	f := newFixture(t, pvesim.Options{AgentBootDelay: time.Hour, TimeScale: 1})
	p := f.provider(t)
	p.opts.StartTimeout = 50 * time.Millisecond
	ctx := context.Background()
	if _, err := p.Desired(f.lab, f.arts); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"bridge/vmbr1", "bridge/vmbr2", "network-apply/pve", "fw-ipset/lab-admin", "fw-ipset/lab-vpn", "fw-group/lab-mgr", "image/local:import/debian-12-genericcloud-amd64.qcow2", "snippet/lab-manager", "vm/lab-manager"} {
		if err := p.Create(ctx, p.want[id].res); err != nil {
			t.Fatalf("Create(%s): %v", id, err)
		}
	}
	err := p.Create(ctx, p.want["start/lab-manager"].res)
	want := "creating start/lab-manager: qemu lab-manager (vmid 110) was started but its guest agent did not answer within 50ms"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Create(start) error = %v\nwant it to start with %s", err, want)
	}
	if !strings.Contains(hintOf(err), "console") {
		t.Errorf("hint = %q", hintOf(err))
	}
}

func TestReplaceNeedsAllowDataLoss(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	ctx := context.Background()
	if pl, err := converge(ctx, p, f.lab, f.arts, false); err != nil {
		t.Fatalf("apply: %v\n%s", err, describe(pl))
	}
	f.lab.Manager.VMID = 120
	desired, err := p.Desired(f.lab, f.arts)
	if err != nil {
		t.Fatal(err)
	}
	observed, err := p.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := plan.Make(desired, observed, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var blocked *plan.Step
	for i := range pl.Steps {
		if pl.Steps[i].ID == "vm/lab-manager" {
			blocked = &pl.Steps[i]
		}
	}
	if blocked == nil || blocked.Action != plan.Replace || blocked.Blocked == "" || blocked.Reason != "vmid cannot change in place" {
		t.Fatalf("plan after a VMID change:\n%s\nwant a blocked replace of vm/lab-manager", describe(pl))
	}
	if _, err := apply.Run(ctx, pl, p, apply.Options{}); err == nil || !strings.Contains(err.Error(), "--allow-data-loss") {
		t.Fatalf("apply of a blocked replace = %v, want a refusal", err)
	}
	pl, err = plan.Make(desired, observed, plan.Options{AllowDataLoss: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply.Run(ctx, pl, p, apply.Options{Backoff: time.Millisecond}); err != nil {
		t.Fatalf("apply with AllowDataLoss: %v\n%s", err, describe(pl))
	}
	snap := f.srv.Snapshot()
	if snap.Guests[110] != nil || snap.Guests[120] == nil || snap.Guests[120].Status != "running" {
		t.Errorf("after the replace: guest 110 %v, guest 120 %v; want 110 gone and 120 running", snap.Guests[110] != nil, snap.Guests[120])
	}
	if pl, err := planFor(ctx, p, f.lab, f.arts, false); err != nil || !pl.Empty() {
		t.Fatalf("plan after the replace is not empty: %v\n%s", err, describe(pl))
	}
	checkViolations(t, f.srv)
}

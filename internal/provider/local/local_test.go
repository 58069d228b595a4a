package local_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/verify"
)

// TestReferenceLab builds the reference lab and checks it end to end:
// idempotent apply, the policy with real packets, the load balancer in
// front of every worker with the client's address passed through, admin
// access through the VPN only, supervision, ejection of a dead worker,
// a broken rule caught by verify, and a destroy that leaves nothing.
func TestReferenceLab(t *testing.T) {
	tl := newTestLab(t)
	ctx := context.Background()
	topo := tl.p.Topology()

	t0 := time.Now()
	pl, _, err := tl.p.Converge(ctx, tl.arts, apply.Options{})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	t.Logf("apply: %d steps in %s", len(pl.Steps), time.Since(t0))

	t.Run("second apply changes nothing", func(t *testing.T) {
		pl, _, err := tl.p.Converge(ctx, tl.arts, apply.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range pl.Steps {
			t.Errorf("second apply: %s %s %v", s.Action, s.ID, s.Changes)
		}
	})

	t.Run("verify: the policy holds", func(t *testing.T) {
		rep, err := verify.Run(ctx, tl.lab, verify.Options{})
		if err != nil {
			var b strings.Builder
			if rep != nil {
				rep.Print(&b)
			}
			t.Fatalf("verify: %v\n%s", err, b.String())
		}
		if len(rep.Probes) < 30 {
			t.Errorf("verify ran %d probes, want at least 30", len(rep.Probes))
		}
	})

	lbWAN := addrOf(t, topo, spec.MachineLB, spec.RoleWAN)
	workers := map[string]bool{}
	for _, g := range topo.Guests {
		if g.Machine.Role == spec.MachineWorker {
			workers[g.Machine.Name] = false
		}
	}

	t.Run("http through the lb reaches every worker with the client's address", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 4*len(workers); i++ {
			node, client := get(t, topo.InternetNS, "http://"+lbWAN.String()+"/")
			if host, _, _ := net.SplitHostPort(client); host != topo.InternetAddr.Addr().String() {
				t.Errorf("backend %s saw client %s, want %s", node, client, topo.InternetAddr.Addr())
			}
			seen[node] = true
		}
		for w := range workers {
			if !seen[w] {
				t.Errorf("no request reached %s (seen %v)", w, seen)
			}
		}
	})

	cp := addrOf(t, topo, spec.MachineControlPlane, spec.RoleAdmin)
	kube := netip.AddrPortFrom(cp, 6443).String()
	t.Run("a vpn peer reaches the kubernetes api, the internet does not", func(t *testing.T) {
		c, err := dialRetry(topo.ClientNS, kube, 3)
		if err != nil {
			t.Fatalf("from %s to %s through the tunnel: %v", topo.ClientNS, kube, err)
		}
		c.Close()
		if c, err := dialRetry(topo.InternetNS, kube, 1); err == nil {
			c.Close()
			t.Errorf("from %s to %s: connected, want filtered", topo.InternetNS, kube)
		}
	})

	w1 := topo.Guests[slices.IndexFunc(topo.Guests, func(g local.Guest) bool { return g.Machine.Role == spec.MachineWorker })]
	t.Run("a killed stand-in is restarted", func(t *testing.T) {
		before := daemon(t, tl.p, w1.NS)
		if before.PID == 0 {
			t.Fatalf("%s is not running", w1.NS)
		}
		if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var after local.DaemonStatus
		if !eventually(10*time.Second, func() bool {
			after = daemon(t, tl.p, w1.NS)
			return after.PID != 0 && after.PID != before.PID
		}) {
			t.Fatalf("%s was not restarted: %+v", w1.NS, after)
		}
		if after.Restarts <= before.Restarts {
			t.Errorf("restarts = %d after a kill, want more than %d", after.Restarts, before.Restarts)
		}
	})

	t.Run("a killed supervisor is restarted by apply and takes over", func(t *testing.T) {
		obs, err := tl.p.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		for _, r := range obs {
			if r.Type == local.TypeSupervisor {
				pid, _ = strconv.Atoi(r.Attrs["pid"])
			}
		}
		if pid == 0 {
			t.Fatalf("no running supervisor observed: %v", obs)
		}
		before := daemon(t, tl.p, w1.NS)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if !eventually(5*time.Second, func() bool {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			return len(b) == 0
		}) {
			t.Fatalf("the supervisor %d survived SIGKILL", pid)
		}
		pl, _, err := tl.p.Converge(ctx, tl.arts, apply.Options{})
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		if !slices.Contains(stepIDs(pl), "update "+local.TypeSupervisor+"/"+tl.lab.Name) {
			t.Errorf("apply after killing the supervisor: %v, want an update of the supervisor", stepIDs(pl))
		}
		after := daemon(t, tl.p, w1.NS)
		if after.PID == 0 || after.PID == before.PID {
			t.Errorf("%s: pid %d before, %d after; want a new daemon under the new supervisor", w1.NS, before.PID, after.PID)
		}
		if !gone(before.PID) {
			t.Errorf("the old supervisor's daemon %d still runs", before.PID)
		}
		verifyOK(t, tl)
	})

	t.Run("the lb ejects a dead worker and takes it back", func(t *testing.T) {
		appsAddr, _ := w1.Machine.Address(spec.RoleApps)
		// Stop it for good (a kill alone is undone by the supervisor).
		if err := tl.p.Delete(ctx, plan.Resource{Type: local.TypeProcess, Name: w1.NS}); err != nil {
			t.Fatal(err)
		}
		if !eventually(30*time.Second, func() bool { return serverState(t, tl.p, appsAddr) == "down" }) {
			t.Fatalf("the lb still sends to %s: %v", appsAddr, health(t, tl.p))
		}
		for range 4 {
			if node, _ := get(t, topo.InternetNS, "http://"+lbWAN.String()+"/"); node == w1.Machine.Name {
				t.Errorf("a request reached the stopped %s", node)
			}
		}
		if _, _, err := tl.p.Converge(ctx, tl.arts, apply.Options{}); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if !eventually(30*time.Second, func() bool { return serverState(t, tl.p, appsAddr) == "up" }) {
			t.Fatalf("the lb did not take %s back: %v", appsAddr, health(t, tl.p))
		}
	})

	t.Run("verify catches a broken rule and apply repairs it", func(t *testing.T) {
		rs, err := firewall.Rulesets(tl.lab)
		if err != nil {
			t.Fatal(err)
		}
		wan, _ := tl.lab.NetworkByRole(spec.RoleWAN)
		admin, _ := tl.lab.NetworkByRole(spec.RoleAdmin)
		broken := rs[firewall.PlaceHost]
		fwd := broken.Tables[0].Chain("forward")
		fwd.Rules = append([]firewall.Rule{{IIfName: wan.Bridge, OIfName: admin.Bridge, Verdict: firewall.Accept,
			Comment: "deliberately broken: the internet may reach admin"}}, fwd.Rules...)
		h, err := ns.Open(topo.HostNS)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		c, err := firewall.Conn(int(h))
		if err != nil {
			t.Fatal(err)
		}
		if err := broken.Load(c); err != nil {
			t.Fatal(err)
		}
		rep, err := verify.Run(ctx, tl.lab, verify.Options{})
		var mm *verify.MismatchError
		if !errors.As(err, &mm) {
			t.Fatalf("verify with a broken host rule = %v, want a *MismatchError", err)
		}
		found := false
		for _, p := range mm.Mismatches {
			if p.From == "internet" && p.Got && strings.Contains(p.To, "api") {
				found = true
			}
		}
		if !found {
			var b strings.Builder
			rep.Print(&b)
			t.Errorf("verify did not report the internet reaching an admin api:\n%s", b.String())
		}
		pl, _, err := tl.p.Converge(ctx, tl.arts, apply.Options{})
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		if len(pl.Steps) != 1 || pl.Steps[0].ID != local.TypeNftables+"/"+topo.HostNS {
			t.Errorf("apply after the broken rule: steps %v, want one update of the host's ruleset", stepIDs(pl))
		}
		if _, err := verify.Run(ctx, tl.lab, verify.Options{}); err != nil {
			t.Errorf("verify after apply: %v", err)
		}
	})

	t.Run("a guest namespace deleted behind apply's back is rebuilt", func(t *testing.T) {
		before := daemon(t, tl.p, w1.NS)
		// ip netns del unmounts the name; the stand-in keeps running in the
		// orphaned namespace, unreachable.
		if out, err := exec.Command("ip", "netns", "del", w1.NS).CombinedOutput(); err != nil {
			t.Skipf("ip netns del: %v %s", err, out)
		}
		pl, _, err := tl.p.Converge(ctx, tl.arts, apply.Options{})
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		if !slices.Contains(stepIDs(pl), "create netns/"+w1.NS) {
			t.Errorf("apply did not recreate %s: %v", w1.NS, stepIDs(pl))
		}
		after := daemon(t, tl.p, w1.NS)
		if after.PID == 0 || after.PID == before.PID {
			t.Errorf("%s: daemon pid %d before, %d after; want a new one", w1.NS, before.PID, after.PID)
		}
		if !gone(before.PID) {
			t.Errorf("the old stand-in %d still runs in the orphaned namespace", before.PID)
		}
		verifyOK(t, tl)
	})

	t.Run("destroy leaves nothing", func(t *testing.T) {
		t0 := time.Now()
		if _, _, err := tl.p.Teardown(ctx, apply.Options{}); err != nil {
			t.Fatalf("destroy: %v", err)
		}
		t.Logf("destroy in %s", time.Since(t0))
		if left := tl.leftovers(t); len(left) > 0 {
			t.Errorf("left behind: %s", strings.Join(left, "\n  "))
		}
		obs, err := tl.p.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(obs) != 0 {
			t.Errorf("observe after destroy: %d resources: %v", len(obs), obs)
		}
	})
}

// gone reports whether pid has ended (a zombie that nobody reaped yet
// counts as ended: it runs nothing and holds no socket).
func gone(pid int) bool {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return len(b) == 0
}

// verifyOK runs verify and prints the matrix when the policy does not hold.
func verifyOK(t *testing.T, tl *testLab) {
	t.Helper()
	rep, err := verify.Run(context.Background(), tl.lab, verify.Options{})
	if err != nil {
		var b strings.Builder
		if rep != nil {
			rep.Print(&b)
		}
		t.Errorf("verify: %v\n%s", err, b.String())
	}
}

func stepIDs(p *plan.Plan) []string {
	var out []string
	for _, s := range p.Steps {
		out = append(out, string(s.Action)+" "+s.ID)
	}
	return out
}

func addrOf(t *testing.T, topo *local.Topology, role spec.MachineRole, net spec.Role) netip.Addr {
	t.Helper()
	g, ok := topo.Guest(role, 0)
	if !ok {
		t.Fatalf("no %s", role)
	}
	a, ok := g.Machine.Address(net)
	if !ok {
		t.Fatalf("%s has no %s address", g.Machine.Name, net)
	}
	return a
}

// get fetches url from inside a namespace and returns the stand-in that
// answered and the client address it saw.
func get(t *testing.T, nsName, url string) (node, client string) {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, nsName, network, addr)
		},
	}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, nsName, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "client="); ok {
			client = v
		}
	}
	return resp.Header.Get("X-Homelab-Standin"), client
}

func dialRetry(nsName, addr string, attempts int) (net.Conn, error) {
	var err error
	for range attempts {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var c net.Conn
		c, err = ns.Dial(ctx, nsName, "tcp", addr)
		cancel()
		if err == nil {
			return c, nil
		}
	}
	return nil, err
}

func daemon(t *testing.T, p *local.Provider, name string) local.DaemonStatus {
	t.Helper()
	ds, err := p.Daemons()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Name == name {
			return d
		}
	}
	return local.DaemonStatus{}
}

func health(t *testing.T, p *local.Provider) []local.BackendHealth {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	h, err := p.LBHealth(ctx)
	if err != nil {
		t.Logf("lb health: %v", err)
	}
	return h
}

// serverState is the LB's state of the backend servers at addr: "up" when
// all are up, "down" when none is, "mixed" otherwise.
func serverState(t *testing.T, p *local.Provider, addr netip.Addr) string {
	up, n := 0, 0
	for _, h := range health(t, p) {
		if host, _, _ := net.SplitHostPort(h.Address); host == addr.String() {
			n++
			if h.State == "up" {
				up++
			}
		}
	}
	switch {
	case n == 0:
		return "unknown"
	case up == n:
		return "up"
	case up == 0:
		return "down"
	}
	return "mixed"
}

func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables): run as root, e.g. sudo go test ./internal/firewall/")
	}
}

// newNS makes an anonymous network namespace for the test and returns its
// handle; the caller's thread is left in its own namespace.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("creating a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("returning to the original namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inNS runs f on a thread inside ns.
func inNS(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			t.Error(err)
			return
		}
		f()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

func TestLoadListsBack(t *testing.T) {
	needRoot(t)
	rs, err := Rulesets(testLab())
	if err != nil {
		t.Fatal(err)
	}
	for _, place := range []string{PlaceHost, PlaceLB, PlaceVPN} {
		t.Run(place, func(t *testing.T) {
			ns := newNS(t)
			c, err := Conn(int(ns))
			if err != nil {
				t.Fatal(err)
			}
			// Twice: the second load replaces the first.
			for range 2 {
				if err := rs[place].Load(c); err != nil {
					t.Fatalf("Load: %v", err)
				}
			}
			got, err := Tables(c)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("Tables() = %d tables, want 1: %+v", len(got), got)
			}
			want := rs[place].Tables[0]
			if got[0].Name != want.Name || got[0].Family != want.Family {
				t.Errorf("table = %s %s, want %s %s", got[0].Family, got[0].Name, want.Family, want.Name)
			}
			for _, ch := range want.Chains {
				if n := got[0].Rules[ch.Name]; n != len(ch.Rules) {
					t.Errorf("chain %s: %d rules in the kernel, want %d", ch.Name, n, len(ch.Rules))
				}
				var comments []string
				for _, r := range ch.Rules {
					comments = append(comments, r.Comment)
				}
				if !slices.Equal(got[0].Comments[ch.Name], comments) {
					t.Errorf("chain %s: comments %q, want %q", ch.Name, got[0].Comments[ch.Name], comments)
				}
			}
			found, err := DeleteTable(c, want.Family, want.Name)
			if err != nil || !found {
				t.Fatalf("DeleteTable = %v, %v; want true, nil", found, err)
			}
			if got, _ := Tables(c); len(got) != 0 {
				t.Errorf("after DeleteTable: %+v", got)
			}
		})
	}
}

// TestLoadFiltersPackets loads a small input policy into a server namespace
// and checks real TCP connections from a client namespace against it.
func TestLoadFiltersPackets(t *testing.T) {
	needRoot(t)
	client, server := newNS(t), newNS(t)
	hc, err := netlink.NewHandleAt(client)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hs, err := netlink.NewHandleAt(server)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "c0"}, PeerName: "s0", PeerNamespace: netlink.NsFd(int(server))}
	if err := hc.LinkAdd(veth); err != nil {
		t.Fatalf("adding veth: %v", err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		name string
		addr string
	}{{hc, "c0", "10.200.0.1/24"}, {hs, "s0", "10.200.0.2/24"}} {
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(x.addr)
		if err := x.h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}

	var lns []net.Listener
	inNS(t, server, func() {
		for _, port := range []string{"8080", "8081", "8082"} {
			ln, err := net.Listen("tcp", "10.200.0.2:"+port)
			if err != nil {
				t.Error(err)
				return
			}
			lns = append(lns, ln)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	})
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()

	rs := &Ruleset{Tables: []*Table{{
		Family: FamilyInet, Name: "homelab-test",
		Sets: []*Set{{Name: "clients", Elements: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/30")}}},
		Chains: []*Chain{{
			Name: "input", Type: TypeFilter, Hook: HookInput, Priority: PriorityFilter, Policy: Drop,
			Rules: []Rule{
				ruleEstablished,
				{IIfName: "s0", SAddr: Addr{Set: "clients"}, Proto: TCP, DPorts: []uint16{8080}, Counter: true, Verdict: Accept, Comment: "one port"},
				{IIfName: "s0", SAddr: Addr{Prefix: netip.MustParsePrefix("10.200.0.1/32")}, Proto: TCP, DPorts: []uint16{8082, 9}, Verdict: Accept, Comment: "a port set"},
				{IIfName: "s0", Proto: ICMP, Verdict: Accept},
			},
		}},
	}}}
	c, err := Conn(int(server))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Load(c); err != nil {
		t.Fatalf("Load: %v", err)
	}
	dial := func(port string) bool {
		var ok bool
		inNS(t, client, func() {
			conn, err := net.DialTimeout("tcp", "10.200.0.2:"+port, 300*time.Millisecond)
			if err == nil {
				conn.Close()
				ok = true
			}
		})
		return ok
	}
	for _, tc := range []struct {
		port string
		want bool
	}{{"8080", true}, {"8081", false}, {"8082", true}} {
		if got := dial(tc.port); got != tc.want {
			t.Errorf("with the ruleset: connect to port %s = %v, want %v", tc.port, got, tc.want)
		}
	}
	if _, err := DeleteTable(c, FamilyInet, "homelab-test"); err != nil {
		t.Fatal(err)
	}
	if !dial("8081") {
		t.Errorf("after DeleteTable: port 8081 still filtered")
	}
}

// TestLoadMatchesText loads each place's ruleset over netlink and checks
// that nft(8), when installed, lists back what Text prints: the netlink
// encoding means the same rules as the text form.
func TestLoadMatchesText(t *testing.T) {
	needRoot(t)
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft(8) is not installed: nothing to compare the kernel's listing with")
	}
	rs, err := Rulesets(testLab())
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("hltest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := Conn(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	norm := strings.NewReplacer(
		"counter packets 0 bytes 0", "counter",
		"priority filter;", "priority 0;",
		"priority srcnat;", "priority 100;",
		"priority dstnat;", "priority -100;",
	)
	lines := func(s string) []string {
		var out []string
		for _, l := range strings.Split(norm.Replace(s), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	for _, place := range []string{PlaceHost, PlaceLB, PlaceVPN} {
		if err := rs[place].Load(c); err != nil {
			t.Fatalf("%s: Load: %v", place, err)
		}
		tbl := rs[place].Tables[0]
		out, err := exec.Command("ip", "netns", "exec", name, nft, "list", "table", string(tbl.Family), tbl.Name).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: nft list: %v\n%s", place, err, out)
		}
		want := lines(rs[place].Text())[2:] // without "table" and "delete table"
		if got := lines(string(out)); !slices.Equal(got, want) {
			t.Errorf("%s: nft lists\n%s\nwant (Text)\n%s", place, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

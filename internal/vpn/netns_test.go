package vpn

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Environment of the re-executed test binary that runs one endpoint.
const (
	envChild  = "HOMELAB_VPN_TEST_CHILD" // "enter", then "run"
	envNetns  = "HOMELAB_VPN_TEST_NETNS"
	envConfig = "HOMELAB_VPN_TEST_CONFIG"
	envUAPI   = "HOMELAB_VPN_TEST_UAPI"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "enter":
		enterAndReexec()
	case "run":
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// enterAndReexec moves this thread into the named network namespace and
// executes the binary again from it, so that every thread of the new
// process, and so every socket wireguard-go opens, lives in that namespace
// (setns only moves the calling thread).
func enterAndReexec() {
	runtime.LockOSThread()
	ns, err := netns.GetFromName(os.Getenv(envNetns))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	if err := netns.Set(ns); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	os.Setenv(envChild, "run")
	err = syscall.Exec("/proc/self/exe", os.Args, os.Environ())
	fmt.Fprintln(os.Stderr, "child: exec:", err)
	os.Exit(2)
}

// runChild runs the endpoint of the config in envConfig, plus a TCP
// greeter on port 7777 that says which namespace answered.
func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	data, err := os.ReadFile(os.Getenv(envConfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	cfg, err := Parse(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	l, err := net.Listen("tcp", ":7777")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from %s to %s\n", os.Getenv(envNetns), c.RemoteAddr())
			c.Close()
		}
	}()
	if IsClient(cfg) {
		err = (&Client{Config: cfg, UAPISocket: os.Getenv(envUAPI)}).Run(ctx)
	} else {
		err = (&Server{Config: cfg, UAPISocket: os.Getenv(envUAPI)}).Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) for network namespaces and TUN devices: run as root, for example sudo go test ./internal/vpn/")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

// newNS creates a named network namespace (removed at cleanup) without
// leaving the test's thread in it.
func newNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("creating network namespace %s: %v", name, r.err)
	}
	t.Cleanup(func() {
		r.h.Close()
		netns.DeleteNamed(name)
	})
	return r.h
}

// inNS runs f on a thread inside ns (a thread that is discarded after).
func inNS(ns netns.NsHandle, f func() error) error {
	ch := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			ch <- err
			return
		}
		ch <- f()
	}()
	return <-ch
}

func addrUp(t *testing.T, h *netlink.Handle, name, cidr string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if cidr != "" {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("adding %s to %s: %v", cidr, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// TestTunnelBetweenNamespaces runs a server and a client, each its own
// process inside its own network namespace joined by a veth pair, and
// checks a real handshake, ping and TCP through the tunnel, the split
// tunnel route to the admin network, and that the TUN device goes away
// with the process.
func TestTunnelBetweenNamespaces(t *testing.T) {
	needRoot(t)
	tag := fmt.Sprint(os.Getpid() % 100000)
	sName, cName := "hlvpnt-s-"+tag, "hlvpnt-c-"+tag
	sns, cns := newNS(t, sName), newNS(t, cName)
	sh, err := netlink.NewHandleAt(sns)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	ch, err := netlink.NewHandleAt(cns)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	// Underlay: 192.0.2.1 (server) <-> 192.0.2.2 (client), TEST-NET-1,
	// inside the test's namespaces only. The server also holds an "admin
	// network" address, 10.10.1.1/24, on a veth pair of its own.
	if err := sh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "under0"}, PeerName: "under0c", PeerNamespace: netlink.NsFd(int(cns))}); err != nil {
		t.Fatalf("creating veth: %v", err)
	}
	if err := sh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "admin0"}, PeerName: "admin0p"}); err != nil {
		t.Fatalf("creating veth: %v", err)
	}
	addrUp(t, sh, "lo", "")
	addrUp(t, ch, "lo", "")
	addrUp(t, sh, "under0", "192.0.2.1/24")
	addrUp(t, sh, "admin0", "10.10.1.1/24")
	addrUp(t, sh, "admin0p", "")
	addrUp(t, ch, "under0c", "192.0.2.2/24")

	sPriv, sPub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cPriv, cPub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	server := &Config{
		Interface: Interface{PrivateKey: sPriv, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}, ListenPort: 51820},
		Peers:     []Peer{{Name: "laptop", PublicKey: cPub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}},
	}
	client := &Config{
		Interface: Interface{PrivateKey: cPriv, Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}},
		Peers: []Peer{{PublicKey: sPub, Endpoint: "192.0.2.1:51820", PersistentKeepalive: 25,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("10.10.1.0/24")}}},
	}
	dir := t.TempDir()
	sProc := startChild(t, dir, sName, server)
	startChild(t, dir, cName, client)
	sSock, cSock := filepath.Join(dir, sName+".sock"), filepath.Join(dir, cName+".sock")

	// TCP through the tunnel, to the server's tunnel address and, through
	// the split-tunnel route, to its admin network.
	for _, target := range []string{"10.99.0.1:7777", "10.10.1.1:7777"} {
		var greeting string
		err := retry(10*time.Second, func() error {
			return inNS(cns, func() error {
				c, err := net.DialTimeout("tcp", target, time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				greeting, err = bufio.NewReader(c).ReadString('\n')
				return err
			})
		})
		if err != nil {
			t.Fatalf("TCP from the client namespace to %s through the tunnel: %v", target, err)
		}
		if want := "hello from " + sName + " to 10.99.0.2:"; !strings.HasPrefix(greeting, want) {
			t.Errorf("greeting from %s = %q, want prefix %q", target, greeting, want)
		}
	}

	if err := inNS(cns, func() error { return ping("10.99.0.1") }); err != nil {
		t.Errorf("ping 10.99.0.1 from the client namespace: %v", err)
	}

	// Both ends saw a handshake with the other's key.
	for _, side := range []struct {
		sock string
		peer Key
	}{{sSock, cPub}, {cSock, sPub}} {
		st, err := QueryUAPI(side.sock)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 || st[0].PublicKey != side.peer || st[0].LastHandshake.IsZero() || st[0].RxBytes == 0 {
			t.Errorf("UAPI status via %s = %+v, want one peer with a handshake and traffic", filepath.Base(side.sock), st)
		}
	}

	// Only AllowedIPs are routed into the tunnel.
	if err := inNS(cns, func() error {
		c, err := net.DialTimeout("tcp", "10.10.2.1:7777", 300*time.Millisecond)
		if err == nil {
			c.Close()
			return fmt.Errorf("reached 10.10.2.1, which is outside AllowedIPs")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// Stopping the server removes its TUN device.
	sProc.Process.Signal(syscall.SIGTERM)
	if err := sProc.Wait(); err != nil {
		t.Errorf("server process: %v", err)
	}
	if _, err := sh.LinkByName(DefaultTun); err == nil {
		t.Errorf("%s still exists in %s after the server stopped", DefaultTun, sName)
	}
}

// startChild runs cfg's endpoint in namespace ns as a child process.
func startChild(t *testing.T, dir, ns string, cfg *Config) *exec.Cmd {
	t.Helper()
	path := filepath.Join(dir, ns+".conf")
	if err := os.WriteFile(path, cfg.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, ns+".sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=enter", envNetns+"="+ns, envConfig+"="+path, envUAPI+"="+sock)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if s := stderr.String(); s != "" {
			t.Logf("%s stderr:\n%s", ns, s)
		}
	})
	if err := retry(10*time.Second, func() error { _, err := QueryUAPI(sock); return err }); err != nil {
		t.Fatalf("endpoint in %s did not come up: %v\n%s", ns, err, stderr.String())
	}
	return cmd
}

func retry(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ping sends one ICMP echo to dst and waits for the reply.
func ping(dst string) error {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: 1, Data: []byte("homelab")}}
	b, _ := msg.Marshal(nil)
	if _, err := c.WriteTo(b, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err == nil && m.Type == ipv4.ICMPTypeEchoReply && from.String() == dst {
			return nil
		}
	}
}

package standin

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "HOMELAB_STANDIN_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild()
		return
	}
	os.Exit(m.Run())
}

// runChild serves a worker on the address in childEnv and prints the
// HTTP port once listening.
func runChild() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	n := &Node{Name: "mem-worker", AppsAddr: loopback, AdminAddr: loopback, EphemeralPorts: true}
	if err := n.Listen(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	a, _ := n.Addr(ServiceHTTP)
	fmt.Println(a.String())
	if err := n.Run(ctx); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

// TestMemory measures a stand-in process after some traffic. The lab's
// budget is 150 MiB for all its processes; a stand-in's private memory is
// what each adds (its code pages are shared with every other process of
// the same binary).
//
// Measured 2026-11-23 with the homelab binary (linux/amd64): RSS about
// 17-21 MiB per stand-in, of which 2.5-3.5 MiB private (Pss_Anon); the
// rest is the binary's text, shared between all lab processes.
func TestMemory(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	for range 200 {
		resp, err := hc.Get("http://" + ap.String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	rss := procKB(t, fmt.Sprintf("/proc/%d/status", cmd.Process.Pid), "VmRSS:")
	anon := procKB(t, fmt.Sprintf("/proc/%d/smaps_rollup", cmd.Process.Pid), "Pss_Anon:")
	t.Logf("stand-in worker after 200 requests: RSS %.1f MiB, private (Pss_Anon) %.1f MiB", float64(rss)/1024, float64(anon)/1024)
	if raceEnabled {
		t.Log("race detector on: memory reported, not checked")
		return
	}
	if anon > 16<<10 {
		t.Errorf("stand-in private memory %d KiB, want under 16 MiB", anon)
	}
}

func procKB(t *testing.T, path, key string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("reading %s: %v (needs Linux /proc)", path, err)
	}
	for l := range strings.Lines(string(data)) {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			v, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("%s: %q", path, l)
			}
			return v
		}
	}
	t.Skipf("%s has no %s", path, key)
	return 0
}

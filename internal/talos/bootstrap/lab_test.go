package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/tunnel"
	"github.com/homelab-dev/homelab/internal/vpn"
)

func TestForLab(t *testing.T) {
	lab, _, err := spec.Parse("lab.yaml", spec.Reference(spec.ProviderLocal))
	if err != nil {
		t.Fatal(err)
	}
	st, err := secrets.OpenWithIdentity(filepath.Join(t.TempDir(), "state"), filepath.Join(t.TempDir(), "id.txt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := st.LoadOrCreate(lab)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ForLab(lab, b, st)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range f.Nodes {
		names = append(names, n.Name)
		if !strings.HasSuffix(n.Addr, ":50000") || len(n.Config) == 0 {
			t.Errorf("node %s: addr %s, %d bytes of config; want the Talos port and a config", n.Name, n.Addr, len(n.Config))
		}
	}
	if got := strings.Join(names, " "); got != "lab-cp-1 lab-worker-1 lab-worker-2" {
		t.Errorf("ForLab nodes = %s, want lab-cp-1 lab-worker-1 lab-worker-2", got)
	}
	if !f.Nodes[0].ControlPlane || f.Probe() != f.Nodes[0].Addr {
		t.Errorf("Probe() = %s, want the first control plane %s", f.Probe(), f.Nodes[0].Addr)
	}
	if err := f.check(); err != nil {
		t.Errorf("ForLab's flow fails its own checks: %v", err)
	}
}

// TestRealLab runs the bootstrap against a real lab when pointed at one:
//
//	HOMELAB_REAL_LAB=/path/to/lab.yaml [HOMELAB_REAL_WG=/path/to/peer.conf] \
//	  go test ./internal/talos/bootstrap -run TestRealLab -v -timeout 30m
//
// with HOMELAB_IDENTITY set as for homelab itself. Without HOMELAB_REAL_WG
// the machine must be on the admin network.
func TestRealLab(t *testing.T) {
	path := os.Getenv("HOMELAB_REAL_LAB")
	if path == "" {
		t.Skip("set HOMELAB_REAL_LAB=/path/to/lab.yaml (and HOMELAB_REAL_WG for a VPN peer config) to bootstrap a real lab")
	}
	lab, _, err := spec.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := secrets.Open(filepath.Join(filepath.Dir(path), secrets.StateDirName))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := st.LoadOrCreate(lab)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ForLab(lab, b, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mode := tunnel.ModeDirect
	var open func(context.Context) (*tunnel.Tunnel, error)
	if wg := os.Getenv("HOMELAB_REAL_WG"); wg != "" {
		mode = tunnel.ModeAuto
		open = func(ctx context.Context) (*tunnel.Tunnel, error) {
			data, err := os.ReadFile(wg)
			if err != nil {
				return nil, err
			}
			cfg, err := vpn.Parse(data)
			if err != nil {
				return nil, err
			}
			return tunnel.Open(ctx, cfg, tunnel.Options{})
		}
	}
	d, how, err := tunnel.Pick(ctx, mode, f.Probe(), 0, open)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("reaching the admin network: %s", how)
	f.Dialer = d
	start := time.Now()
	f.Progress = func(format string, args ...any) {
		t.Logf("%7.1fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	res, err := f.Run(ctx)
	if res != nil && res.Health != nil {
		t.Logf("\n%s", res.Health)
	}
	if err != nil {
		t.Fatal(err)
	}
}

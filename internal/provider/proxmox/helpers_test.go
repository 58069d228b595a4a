package proxmox

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/plan"
	"github.com/homelab-dev/homelab/internal/pvesim"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

// refLab is the reference lab of homelab init --provider proxmox, pointed
// at endpoint.
func refLab(t testing.TB, endpoint, tokenID string) *spec.Lab {
	t.Helper()
	lab, _, err := spec.Parse("lab.yaml", spec.Reference(spec.ProviderProxmox))
	if err != nil {
		t.Fatalf("parsing the reference lab: %v", err)
	}
	lab.Host.Proxmox.Endpoint = endpoint
	lab.Host.Proxmox.TokenID = tokenID
	lab.Host.Proxmox.TokenEnv = ""
	return lab
}

// fakeArts stands in for render's output: the paths the provider reads,
// with small contents.
func fakeArts(lab *spec.Lab) []render.Artifact {
	arts := []render.Artifact{
		{Path: "talos/schematic.id", Data: []byte("376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n")},
		{Path: "cloud-init/manager/user-data", Data: []byte("#cloud-config\nusers: [admin]\n")},
		{Path: "lb/lb.yaml", Data: []byte("frontends: []\n")},
		{Path: "wireguard/server.conf", Data: []byte("[Interface]\nPrivateKey = TEST\n"), Secret: true},
	}
	for _, m := range lab.Machines() {
		if m.Role == spec.MachineControlPlane || m.Role == spec.MachineWorker {
			arts = append(arts, render.Artifact{Path: "talos/" + m.Name + ".yaml", Data: []byte("machine: {type: " + string(m.Role) + "}\n"), Secret: true})
		}
	}
	return arts
}

// fakeBinary is a small file standing in for the homelab binary.
func fakeBinary(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "homelab")
	// An ELF header of a 64-bit little-endian x86-64 file, then filler.
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01\x01")
	hdr[18] = 62
	if err := os.WriteFile(p, append(hdr, "homelab test stand-in\n"...), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// startSim starts a simulator with fast tasks.
func startSim(t testing.TB, opts pvesim.Options) *pvesim.Server {
	t.Helper()
	if opts.TimeScale == 0 {
		opts.TimeScale = 0.001
	}
	return pvesim.Start(t, opts)
}

type fixture struct {
	srv   *pvesim.Server
	lab   *spec.Lab
	arts  []render.Artifact
	shell *MemShell
	bin   string
	log   *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newFixture(t testing.TB, opts pvesim.Options) *fixture {
	srv := startSim(t, opts)
	lab := refLab(t, srv.URL, srv.TokenID)
	sh := NewMemShell()
	sh.OnWrite = func(path string, data []byte) {
		if name, ok := strings.CutPrefix(path, "/var/lib/vz/snippets/"); ok {
			srv.AddVolume(pvesim.Volume{VolID: "local:snippets/" + name, Content: "snippets", Size: int64(len(data))})
		}
	}
	sh.OnRun = func(argv []string) {
		// pct set <vmid> --dev0 <path>: what root does on the host.
		if len(argv) == 5 && argv[0] == "pct" && argv[1] == "set" && argv[3] == "--dev0" {
			form := url.Values{"dev0": {argv[4]}}
			req, _ := http.NewRequest("PUT", srv.URL+"/nodes/pve/lxc/"+argv[2]+"/config", strings.NewReader(form.Encode()))
			req.Header.Set("Authorization", "PVEAPIToken="+pvesim.DefaultTokenID+"="+pvesim.DefaultTokenSecret)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err := srv.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}
	return &fixture{srv: srv, lab: lab, arts: fakeArts(lab), shell: sh, bin: fakeBinary(t), log: &syncBuf{}}
}

func (f *fixture) options() Options {
	return Options{HTTPClient: f.srv.Client(), Token: f.srv.TokenSecret, Shell: f.shell, Binary: f.bin,
		Poll: time.Millisecond, StartTimeout: 5 * time.Second, Log: f.log}
}

func (f *fixture) provider(t testing.TB) *Provider {
	t.Helper()
	p, err := New(context.Background(), f.lab, f.options())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	p.api.Backoff = time.Millisecond
	return p
}

// planFor computes the plan that takes the live state to the lab (or to
// nothing when destroy is set).
func planFor(ctx context.Context, p *Provider, lab *spec.Lab, arts []render.Artifact, destroy bool) (*plan.Plan, error) {
	desired, err := p.Desired(lab, arts)
	if err != nil {
		return nil, err
	}
	observed, err := p.Observe(ctx)
	if err != nil {
		return nil, err
	}
	if destroy {
		desired = nil
		kept, err := p.Kept(ctx)
		if err != nil {
			return nil, err
		}
		observed = dropIDs(observed, kept)
	}
	return plan.Make(desired, observed, plan.Options{})
}

func dropIDs(rs []plan.Resource, ids []string) []plan.Resource {
	skip := map[string]bool{}
	for _, id := range ids {
		skip[id] = true
	}
	var out []plan.Resource
	for _, r := range rs {
		if !skip[r.ID()] {
			out = append(out, r)
		}
	}
	return out
}

// converge plans and applies once.
func converge(ctx context.Context, p *Provider, lab *spec.Lab, arts []render.Artifact, destroy bool) (*plan.Plan, error) {
	pl, err := planFor(ctx, p, lab, arts, destroy)
	if err != nil {
		return nil, err
	}
	_, err = apply.Run(ctx, pl, p, apply.Options{Parallel: 8, Backoff: 5 * time.Millisecond})
	return pl, err
}

func describe(pl *plan.Plan) string {
	var b bytes.Buffer
	for _, s := range pl.Steps {
		fmt.Fprintf(&b, "  %s %s", s.Action, s.ID)
		for _, c := range s.Changes {
			fmt.Fprintf(&b, " [%s: %q -> %q]", c.Key, c.Observed, c.Desired)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func checkViolations(t *testing.T, srv *pvesim.Server) {
	t.Helper()
	for _, v := range srv.Violations() {
		t.Errorf("schema violation: %s", v)
	}
}

package proxmox

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/provider/proxmox/pveapi"
	"github.com/homelab-dev/homelab/internal/pvesim"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// contractEnv is a Proxmox VE API the contract suite runs against.
type contractEnv struct {
	URL     string // https://host:8006 (with or without /api2/json)
	TokenID string // user@realm!name
	Secret  string
	Client  *http.Client
	Node    string
	Storage string
	Shell   HostShell
	// Lab and Arts are the lab to build and its rendered files.
	Lab  *spec.Lab
	Arts []render.Artifact
	// Check, when set, runs after each phase (the simulator's schema
	// violations).
	Check func(t *testing.T)
	// StartTimeout bounds each guest's start.
	StartTimeout time.Duration
}

// runContract is the provider's contract: apply from empty converges, a
// second plan is empty and a second apply only reads (few calls), destroy
// leaves nothing the lab owned but the images it keeps on purpose.
func runContract(t *testing.T, env contractEnv) {
	ctx := context.Background()
	lab := env.Lab
	lab.Host.Proxmox.Endpoint = env.URL
	lab.Host.Proxmox.TokenID = env.TokenID
	if env.Node != "" {
		lab.Host.Proxmox.Node = env.Node
	}
	if env.Storage != "" {
		lab.Host.Proxmox.Storage = env.Storage
	}
	bin := fakeBinary(t)
	log := &syncBuf{}
	p, err := New(ctx, lab, Options{HTTPClient: env.Client, Token: env.Secret, Shell: env.Shell, Binary: bin,
		Poll: 50 * time.Millisecond, StartTimeout: env.StartTimeout, Log: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	check := func() {
		if env.Check != nil {
			env.Check(t)
		}
		if strings.Contains(log.String(), env.Secret) {
			t.Errorf("the provider's log shows the token secret")
		}
	}

	if pl, err := converge(ctx, p, lab, env.Arts, false); err != nil {
		t.Fatalf("apply from empty: %v\nplan:\n%s", err, describe(pl))
	}
	check()
	second, err := planFor(ctx, p, lab, env.Arts, false)
	if err != nil {
		t.Fatalf("second plan: %v", err)
	}
	if !second.Empty() {
		t.Fatalf("second plan is not empty:\n%s", describe(second))
	}
	before := p.API().Calls()
	if pl, err := converge(ctx, p, lab, env.Arts, false); err != nil || !pl.Empty() {
		t.Fatalf("second apply: %v\n%s", err, describe(pl))
	}
	// A fixed cost, plus at most one config read per guest when the API
	// does not report disk sizes in /cluster/resources.
	if n, max := p.API().Calls()-before, int64(16+len(lab.Machines())); n > max {
		t.Errorf("second apply made %d API calls, want at most %d", n, max)
	}
	check()

	if pl, err := converge(ctx, p, lab, env.Arts, true); err != nil {
		t.Fatalf("destroy: %v\nplan:\n%s", err, describe(pl))
	}
	obs, err := p.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range obs {
		if r.Type != tImage && r.Type != tTemplate {
			t.Errorf("destroy left %s", r.ID())
		}
	}
	check()
}

func TestContractSimulator(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	runContract(t, contractEnv{
		URL: f.srv.URL, TokenID: f.srv.TokenID, Secret: f.srv.TokenSecret, Client: f.srv.Client(),
		Shell: f.shell, Lab: f.lab, Arts: f.arts, StartTimeout: 5 * time.Second,
		Check: func(t *testing.T) { checkViolations(t, f.srv) },
	})
	// Calls of a no-op apply, by the simulator's own count.
	f2 := newFixture(t, pvesim.Options{})
	p := f2.provider(t)
	ctx := context.Background()
	if _, err := converge(ctx, p, f2.lab, f2.arts, false); err != nil {
		t.Fatal(err)
	}
	f2.srv.ResetCalls()
	if _, err := converge(ctx, p, f2.lab, f2.arts, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range f2.srv.Calls() {
		if c.Method != "GET" {
			t.Errorf("no-op apply changed something: %s %s", c.Method, c.Path)
		}
	}
	fixed := 0
	for k, n := range f2.srv.CallCounts() {
		if !strings.HasSuffix(k, "/{vmid}/config") {
			fixed += n
		}
	}
	if fixed > 16 {
		t.Errorf("no-op apply made %d calls besides per-guest config reads, want at most 16: %v", fixed, f2.srv.CallCounts())
	}
	t.Logf("no-op apply: %d calls %v", f2.srv.CallCount(), f2.srv.CallCounts())
}

// TestContractRealProxmox runs the same suite against a real Proxmox VE.
func TestContractRealProxmox(t *testing.T) {
	u, tok := os.Getenv("PROXMOX_URL"), os.Getenv("PROXMOX_TOKEN")
	if u == "" || tok == "" {
		t.Skip("set PROXMOX_URL (https://pve:8006), PROXMOX_TOKEN (user@realm!name=secret), PROXMOX_NODE, PROXMOX_STORAGE, " +
			"PROXMOX_SSH (root@host; its key in ssh-agent and known_hosts) and PROXMOX_FINGERPRINT or PROXMOX_CA_FILE " +
			"to run the contract suite against a real Proxmox VE; it builds and destroys a small lab named hltest with VMIDs 9100-9210 (see docs/proxmox.md)")
	}
	id, secret, ok := strings.Cut(tok, "=")
	if !ok {
		t.Fatal("PROXMOX_TOKEN must be user@realm!name=secret")
	}
	tcfg, err := pveapi.TLSConfig(pveapi.TLSOptions{CAFile: os.Getenv("PROXMOX_CA_FILE"), Fingerprint: os.Getenv("PROXMOX_FINGERPRINT")})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tcfg.Clone(), TLSHandshakeTimeout: 10 * time.Second}}
	lab := smallRealLab(t)
	var shell HostShell
	if s := os.Getenv("PROXMOX_SSH"); s != "" {
		user, addr, _ := strings.Cut(s, "@")
		sh, err := DialSSH(context.Background(), spec.SSH{User: user, Address: addr}, "")
		if err != nil {
			t.Fatal(err)
		}
		defer sh.Close()
		shell = sh
	}
	b := &secrets.Bundle{}
	if _, err := b.Fill(lab); err != nil {
		t.Fatal(err)
	}
	arts, err := render.Render(lab, b)
	if err != nil {
		t.Fatal(err)
	}
	runContract(t, contractEnv{URL: u, TokenID: id, Secret: secret, Client: hc, Node: os.Getenv("PROXMOX_NODE"),
		Storage: os.Getenv("PROXMOX_STORAGE"), Shell: shell, Lab: lab, Arts: arts, StartTimeout: 10 * time.Minute})
}

// smallRealLab is the reference lab, renamed hltest, on VMIDs unlikely to
// be taken, with one control plane and one worker.
func smallRealLab(t *testing.T) *spec.Lab {
	src := strings.Replace(string(spec.Reference(spec.ProviderProxmox)), "name: lab\n", "name: hltest\n", 1)
	lab, _, err := spec.Parse("lab.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	lab.VPN.VMID, lab.LoadBalancer.VMID, lab.Manager.VMID = 9100, 9101, 9110
	lab.Cluster.ControlPlanes.VMIDStart, lab.Cluster.ControlPlanes.Count = 9200, 1
	lab.Cluster.Workers.VMIDStart, lab.Cluster.Workers.Count = 9210, 1
	return lab
}

func TestDesiredWithRenderedArtifacts(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	b := &secrets.Bundle{}
	if _, err := b.Fill(f.lab); err != nil {
		t.Fatal(err)
	}
	arts, err := render.Render(f.lab, b)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.Desired(f.lab, arts)
	if err != nil {
		t.Fatalf("Desired with render's artifacts: %v", err)
	}
	for _, r := range rs {
		for k, v := range r.Attrs {
			for _, a := range arts {
				if a.Secret && len(a.Data) > 16 && strings.Contains(v, string(a.Data)) {
					t.Errorf("%s attribute %s holds secret artifact %s", r.ID(), k, a.Path)
				}
			}
		}
	}
}

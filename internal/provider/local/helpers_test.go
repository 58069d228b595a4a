package local_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

func needRoot(t testing.TB) {
	t.Helper()
	if err := local.CheckPrivileges(); err != nil {
		t.Skip("needs root (network namespaces, nftables, processes): run as root, e.g. sudo go test ./internal/provider/local/")
	}
}

var (
	buildOnce sync.Once
	builtExe  string
	buildErr  error
)

// homelabBinary builds ./cmd/homelab once per test run: the supervisor and
// the daemons are that binary's subcommands.
func homelabBinary(t testing.TB) string {
	t.Helper()
	if exe := os.Getenv("HOMELAB_TEST_BINARY"); exe != "" {
		return exe // a prebuilt homelab (for example to test another build)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "homelab-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtExe = filepath.Join(dir, "homelab")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..", "..")
		cmd := exec.Command("go", "build", "-o", builtExe, "./cmd/homelab")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildFailure{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatalf("building homelab: %v", buildErr)
	}
	return builtExe
}

type buildFailure struct {
	out string
	err error
}

func (b *buildFailure) Error() string { return b.err.Error() + "\n" + b.out }

// testLab is the reference lab under a unique name, with its state folder,
// secrets and artifacts.
type testLab struct {
	lab      *spec.Lab
	dir      string
	stateDir string
	arts     []render.Artifact
	p        *local.Provider
	exe      string
}

func uniqueName(t testing.TB) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// newTestLab writes the reference lab under a unique name into a temporary
// folder and returns its provider; the lab is destroyed when the test ends.
func newTestLab(t testing.TB) *testLab {
	t.Helper()
	needRoot(t)
	exe := homelabBinary(t)
	dir := t.TempDir()
	name := uniqueName(t)
	yaml := strings.Replace(string(spec.Reference(spec.ProviderLocal)), "\nname: lab\n", "\nname: "+name+"\n", 1)
	path := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	lab, _, err := spec.Load(path)
	if err != nil {
		t.Fatalf("loading the reference lab: %v", err)
	}
	if lab.Name != name {
		t.Fatalf("lab name = %q, want %q", lab.Name, name)
	}
	tl := &testLab{lab: lab, dir: dir, exe: exe, stateDir: filepath.Join(dir, secrets.StateDirName)}
	store, err := secrets.OpenWithIdentity(tl.stateDir, filepath.Join(dir, "identity.txt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, err := store.LoadOrCreate(lab)
	if err != nil {
		t.Fatal(err)
	}
	if tl.arts, err = render.Render(lab, bundle); err != nil {
		t.Fatal(err)
	}
	if tl.p, err = local.New(lab, tl.stateDir, local.Options{Executable: exe}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, _, err := tl.p.Teardown(ctx, apply.Options{}); err != nil {
			t.Errorf("cleanup: destroy: %v", err)
		}
		for _, n := range tl.p.Topology().Namespaces() {
			_ = ns.Delete(n)
		}
	})
	return tl
}

// leftovers lists what of the lab still exists: namespaces, processes
// whose command line names its state folder, and stray links in the root
// namespace with its name.
func (tl *testLab) leftovers(t testing.TB) []string {
	t.Helper()
	var out []string
	names, err := ns.List(func(n string) bool { return strings.HasPrefix(n, tl.lab.Name+"-") })
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		out = append(out, "namespace "+n)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cl, tl.stateDir) || strings.Contains(cl, "--name "+tl.lab.Name+"-") {
			out = append(out, "process "+e.Name()+": "+cl)
		}
	}
	// Nothing of the lab lives in this namespace; check that it stayed so.
	if c, err := firewall.Conn(-1); err == nil {
		tables, _ := firewall.Tables(c)
		for _, tb := range tables {
			if tb.Name == firewall.TableName(tl.lab) {
				out = append(out, "nftables table "+tb.Name+" in the root namespace")
			}
		}
	}
	if _, err := os.Stat("/run/homelab/" + tl.lab.Name + ".owner"); err == nil {
		out = append(out, "owner record /run/homelab/"+tl.lab.Name+".owner")
	}
	// The daemons' rendered configs hold private keys: none may outlive them.
	if cfgs, _ := os.ReadDir(filepath.Join(tl.stateDir, "local", "config")); len(cfgs) > 0 {
		for _, c := range cfgs {
			out = append(out, "daemon config "+filepath.Join(tl.stateDir, "local", "config", c.Name()))
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if strings.HasPrefix(l.Name(), tl.lab.Name) {
			out = append(out, "link "+l.Name())
		}
	}
	return out
}

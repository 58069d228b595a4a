package render

import (
	"bytes"
	"encoding/base64"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	talossecrets "github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"go.yaml.in/yaml/v4"

	"github.com/homelab-dev/homelab/internal/lb"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos"
)

var (
	update      = flag.Bool("update", false, "rewrite the golden files in testdata/golden")
	regenBundle = flag.Bool("regen-bundle", false, "generate a new test-only secrets bundle in testdata (then run -update)")
)

// testBundleFile holds a secrets bundle made once for these tests with
// TestGenerateBundle. It is test-only: its keys protect nothing.
const testBundleFile = "testdata/TEST-ONLY-secrets-bundle.yaml"

func testLab(t testing.TB) *spec.Lab {
	t.Helper()
	lab, _, err := spec.Load("testdata/lab.yaml")
	if err != nil {
		t.Fatalf("loading testdata/lab.yaml: %v", err)
	}
	return lab
}

func testBundle(t testing.TB) *secrets.Bundle {
	t.Helper()
	data, err := os.ReadFile(testBundleFile)
	if err != nil {
		t.Fatalf("reading the test bundle (make one with go test -run TestGenerateBundle -regen-bundle): %v", err)
	}
	var b secrets.Bundle
	if err := yaml.Unmarshal(data, &b); err != nil {
		t.Fatalf("decoding %s: %v", testBundleFile, err)
	}
	b.Talos.Clock = talossecrets.NewClock()
	return &b
}

// TestGenerateBundle writes the fixed test bundle; it runs only with
// -regen-bundle, after which the golden files need -update.
func TestGenerateBundle(t *testing.T) {
	if !*regenBundle {
		t.Skip("run with -regen-bundle to make a new test-only bundle")
	}
	var b secrets.Bundle
	if _, err := b.Fill(testLab(t)); err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	head := "# TEST ONLY: a secrets bundle generated for render's golden tests\n" +
		"# (go test ./internal/render -run TestGenerateBundle -regen-bundle).\n" +
		"# These keys are public and protect nothing; never use them in a lab.\n"
	if err := os.WriteFile(testBundleFile, append([]byte(head), data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func renderTest(t *testing.T) []Artifact {
	t.Helper()
	arts, err := Render(testLab(t), testBundle(t))
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return arts
}

func TestGolden(t *testing.T) {
	arts := renderTest(t)
	root := filepath.Join("testdata", "golden")
	if *update {
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		for _, a := range arts {
			p := filepath.Join(root, filepath.FromSlash(a.Path))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, a.Data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var paths []string
	for _, a := range arts {
		paths = append(paths, a.Path)
		t.Run(a.Path, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(a.Path)))
			if err != nil {
				t.Fatalf("reading golden file (run go test -update to create it): %v", err)
			}
			if !bytes.Equal(a.Data, want) {
				t.Errorf("%s differs from its golden file (run go test -update and review the diff):\n%s", a.Path, a.Data)
			}
		})
	}
	var golden []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		golden = append(golden, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(paths, golden) {
		t.Errorf("artifacts %v, golden files %v (run go test -update)", paths, golden)
	}
}

func TestExpectedArtifacts(t *testing.T) {
	secret := map[string]bool{}
	for _, a := range renderTest(t) {
		secret[a.Path] = a.Secret
	}
	want := map[string]bool{
		"talos/lab-cp-1.yaml": true, "talos/lab-worker-1.yaml": true, "talos/lab-worker-2.yaml": true,
		"talos/talosconfig": true, "talos/schematic.yaml": false, "talos/schematic.id": false,
		"wireguard/server.conf": true, "wireguard/peers/laptop.conf": true, "wireguard/peers/phone.conf": false,
		"nftables/host.nft": false, "nftables/lb.nft": false, "nftables/vpn.nft": false,
		"lb/lb.yaml":                   false,
		"cloud-init/manager/user-data": false, "cloud-init/manager/meta-data": false, "cloud-init/manager/network-config": false,
		"proxmox/interfaces": false, "diagram/lab.svg": false,
	}
	for p, s := range want {
		got, ok := secret[p]
		switch {
		case !ok:
			t.Errorf("Render made no %s", p)
		case got != s:
			t.Errorf("%s: Secret = %v, want %v", p, got, s)
		}
	}
}

func TestDeterministic(t *testing.T) {
	a1 := renderTest(t)
	a2 := renderTest(t)
	if len(a1) != len(a2) {
		t.Fatalf("two renders gave %d and %d artifacts", len(a1), len(a2))
	}
	for i := range a1 {
		if a1[i].Path != a2[i].Path || !bytes.Equal(a1[i].Data, a2[i].Data) || a1[i].Secret != a2[i].Secret {
			t.Errorf("artifact %d differs between two renders: %s / %s", i, a1[i].Path, a2[i].Path)
		}
	}
	if !slices.IsSortedFunc(a1, func(x, y Artifact) int { return strings.Compare(x.Path, y.Path) }) {
		t.Error("artifacts are not sorted by path")
	}
}

// secretValues lists the bundle's secret material, each as it is and
// base64 encoded (machine configs carry keys base64 encoded).
func secretValues(b *secrets.Bundle) map[string]string {
	out := map[string]string{}
	add := func(name string, v []byte) {
		if len(v) == 0 {
			return
		}
		out[name] = string(v)
		out[name+" (base64)"] = base64.StdEncoding.EncodeToString(v)
	}
	add("wireguard server private key", []byte(b.WireGuard.Server.Private))
	for n, kp := range b.WireGuard.Peers {
		add("wireguard peer "+n+" private key", []byte(kp.Private))
	}
	tb := b.Talos
	add("talos cluster secret", []byte(tb.Cluster.Secret))
	add("talos bootstrap token", []byte(tb.Secrets.BootstrapToken))
	add("talos secretbox secret", []byte(tb.Secrets.SecretboxEncryptionSecret))
	add("talos aescbc secret", []byte(tb.Secrets.AESCBCEncryptionSecret))
	add("talos trustd token", []byte(tb.TrustdInfo.Token))
	add("etcd ca key", tb.Certs.Etcd.Key)
	add("kubernetes ca key", tb.Certs.K8s.Key)
	add("kubernetes aggregator ca key", tb.Certs.K8sAggregator.Key)
	add("kubernetes service account key", tb.Certs.K8sServiceAccount.Key)
	add("talos api ca key", tb.Certs.OS.Key)
	if b.TalosAdmin != nil {
		add("talos admin key", b.TalosAdmin.Key)
	}
	return out
}

func TestNoSecretOutsideSecretArtifacts(t *testing.T) {
	b := testBundle(t)
	arts := renderTest(t)
	vals := secretValues(b)
	found := map[string]bool{}
	for _, a := range arts {
		for name, v := range vals {
			if !bytes.Contains(a.Data, []byte(v)) {
				continue
			}
			found[name] = true
			if !a.Secret {
				t.Errorf("%s is not marked secret but holds the %s", a.Path, name)
			}
		}
		if !a.Secret && bytes.Contains(a.Data, []byte("PRIVATE KEY")) {
			t.Errorf("%s is not marked secret but holds a PEM private key", a.Path)
		}
	}
	// The scan must see the secrets where they belong, or it proves nothing.
	for _, name := range []string{"wireguard server private key", "wireguard peer laptop private key", "talos bootstrap token (base64)"} {
		if !found[name] && !found[strings.TrimSuffix(name, " (base64)")] {
			t.Errorf("no artifact holds the %s: the leak scan is not looking at the right values", name)
		}
	}
}

func TestLBConfigParses(t *testing.T) {
	for _, a := range renderTest(t) {
		if a.Path != "lb/lb.yaml" {
			continue
		}
		cfg, err := lb.Parse(a.Data)
		if err != nil {
			t.Fatalf("lb.Parse(lb/lb.yaml): %v", err)
		}
		if len(cfg.Frontends) != 2 || len(cfg.Backends) != 2 || len(cfg.Backends[0].Servers) != 2 {
			t.Errorf("lb.yaml has %d frontends, %d backends; want 2 and 2 with 2 servers each", len(cfg.Frontends), len(cfg.Backends))
		}
		return
	}
	t.Fatal("no lb/lb.yaml artifact")
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	arts := []Artifact{
		{Path: "a/public.txt", Data: []byte("hello\n")},
		{Path: "b/c/secret.txt", Data: []byte("s3cret\n"), Secret: true},
		{Path: "top.txt", Data: []byte("top\n")},
	}
	for range 2 { // the second write replaces and keeps the modes
		n, err := Write(dir, arts)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("Write returned %d secret files, want 1", n)
		}
	}
	modes := map[string]fs.FileMode{
		".": 0o700, "a": 0o755, "a/public.txt": 0o644, "b": 0o700, "b/c": 0o700, "b/c/secret.txt": 0o600, "top.txt": 0o644,
	}
	for p, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "b", "c", "secret.txt"))
	if err != nil || string(got) != "s3cret\n" {
		t.Errorf("secret.txt = %q, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "b", "c"))
	if len(entries) != 1 {
		t.Errorf("b/c holds %d entries, want 1 (temporary files left behind?)", len(entries))
	}
	if _, err := Write(dir, []Artifact{{Path: "../escape", Data: nil}}); err == nil {
		t.Error("Write(../escape) succeeded, want an error")
	}
}

func TestWritePublicOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := Write(dir, []Artifact{{Path: "x", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("out dir mode = %v, want 0755 when nothing is secret", fi.Mode().Perm())
	}
}

func TestTalosConfigsValidate(t *testing.T) {
	n := 0
	for _, a := range renderTest(t) {
		if !strings.HasPrefix(a.Path, "talos/") || !strings.HasSuffix(a.Path, ".yaml") || a.Path == "talos/schematic.yaml" {
			continue
		}
		n++
		if err := talos.Validate(a.Data); err != nil {
			t.Errorf("%s: %v", a.Path, err)
		}
	}
	if n != 3 {
		t.Errorf("validated %d machine configs, want 3 (1 control plane, 2 workers)", n)
	}
}

// TestRenderReference renders the reference labs that homelab init
// writes, with fresh secrets: every node config passes Talos validation,
// the LB config parses, nft accepts the rulesets, and no secret lands in
// a public artifact.
func TestRenderReference(t *testing.T) {
	for _, p := range []spec.Provider{spec.ProviderLocal, spec.ProviderProxmox} {
		t.Run(string(p), func(t *testing.T) {
			lab, _, err := spec.Parse("reference.yaml", spec.Reference(p))
			if err != nil {
				t.Fatalf("loading the reference lab: %v", err)
			}
			var b secrets.Bundle
			if _, err := b.Fill(lab); err != nil {
				t.Fatal(err)
			}
			arts, err := Render(lab, &b)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			vals := secretValues(&b)
			for _, a := range arts {
				switch {
				case strings.HasPrefix(a.Path, "talos/") && strings.HasSuffix(a.Path, ".yaml") && a.Path != "talos/schematic.yaml":
					if err := talos.Validate(a.Data); err != nil {
						t.Errorf("%s: %v", a.Path, err)
					}
				case a.Path == "lb/lb.yaml":
					if _, err := lb.Parse(a.Data); err != nil {
						t.Errorf("lb.Parse(%s): %v", a.Path, err)
					}
				case strings.HasPrefix(a.Path, "nftables/"):
					nftCheck(t, a.Path, a.Data)
				}
				if a.Secret {
					continue
				}
				for name, v := range vals {
					if bytes.Contains(a.Data, []byte(v)) {
						t.Errorf("%s is not marked secret but holds the %s", a.Path, name)
					}
				}
			}
		})
	}
}

// nftCheck has nft(8) parse the ruleset and run the kernel's checks
// without changing anything (nft -c).
func nftCheck(t *testing.T, name string, data []byte) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Logf("skipping nft -c of %s: nft(8) is not installed", name)
		return
	}
	if os.Geteuid() != 0 {
		t.Logf("skipping nft -c of %s: it needs root (CAP_NET_ADMIN); run the tests as root", name)
		return
	}
	cmd := exec.Command(nft, "-c", "-f", "-")
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("nft -c refused %s: %v\n%s", name, err, out)
	}
}

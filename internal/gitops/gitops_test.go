package gitops

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"
	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/sops"
	"github.com/homelab-dev/homelab/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testIdentity is a fixed age key made for these tests (no secret), and
// testRecipient its public half: the golden tree's .sops.yaml and SOPS
// files name it.
const (
	testIdentity  = "AGE-SECRET-KEY-1XJVAMVP2UHS0PHLFGGC4TQSXWLR75A5XU2H7SU4C7ND4P6Z4Z87Q3FEP4J"
	testRecipient = "age10uzn8ykxt0vuw3u06s37t50e4f60k0vnh5wvp2f29ufzv7mj2vmsqpnun8"
)

// testStore is a state folder holding the test key.
func testStore() memStore {
	return memStore{StateFileSOPSAgeKey: []byte(testIdentity + "\n")}
}

// normalize hides what changes with every encryption (data key, IVs,
// tags, ciphertexts, time) in the SOPS files, keeping their layout, keys
// and types, so that they can be golden files.
func normalize(p string, data []byte) []byte {
	if !strings.HasSuffix(p, ".sops.yaml") {
		return data
	}
	s := encRe.ReplaceAllString(string(data), "ENC[AES256_GCM,data:<ciphertext>,iv:<iv>,tag:<tag>,type:$1]")
	s = lastModRe.ReplaceAllString(s, `lastmodified: "<time>"`)
	s = armorRe.ReplaceAllString(s, "$1$2<the data key, age-encrypted>\n$3")
	return []byte(s)
}

var (
	encRe     = regexp.MustCompile(`ENC\[AES256_GCM,data:[^,]*,iv:[^,]*,tag:[^,]*,type:([a-z]+)\]`)
	lastModRe = regexp.MustCompile(`lastmodified: "[^"]*"`)
	armorRe   = regexp.MustCompile(`(?s)(( *)-----BEGIN AGE ENCRYPTED FILE-----\n).*?\n( *-----END AGE ENCRYPTED FILE-----)`)
)

func referenceLab(t *testing.T) *spec.Lab {
	t.Helper()
	lab, diags, err := spec.Parse("lab.yaml", spec.Reference(spec.ProviderLocal))
	if err != nil {
		t.Fatalf("parsing the reference lab: %v %v", err, diags)
	}
	return lab
}

func TestTreeGolden(t *testing.T) {
	lab := referenceLab(t)
	st := testStore()
	arts, err := Build(lab, st)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "tree")
	if *update {
		os.RemoveAll(dir)
		for _, a := range arts {
			p := filepath.Join(dir, filepath.FromSlash(a.Path))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, normalize(a.Path, a.Data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]bool{}
	for _, a := range arts {
		seen[a.Path] = true
		want, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(a.Path)))
		if err != nil {
			t.Errorf("%s: no golden file (run go test -update): %v", a.Path, err)
			continue
		}
		if got := normalize(a.Path, a.Data); !bytes.Equal(got, want) {
			t.Errorf("%s differs from its golden file (run go test -update and review the diff):\n%s", a.Path, got)
		}
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			if !seen[filepath.ToSlash(rel)] {
				t.Errorf("golden file %s is no longer rendered", rel)
			}
		}
		return nil
	})

	// Same state folder: the same bytes, encrypted secrets included (they
	// are reused, not encrypted again).
	again, err := Build(lab, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(arts) {
		t.Fatalf("second build has %d files, first %d", len(again), len(arts))
	}
	for i := range arts {
		if arts[i].Path != again[i].Path || !bytes.Equal(arts[i].Data, again[i].Data) {
			t.Errorf("second build of %s differs: the tree is not stable", arts[i].Path)
		}
	}
}

// TestTreeDecodesStrictly decodes every manifest of the tree into its API
// type with unknown fields rejected, and checks the wiring between them.
func TestTreeDecodesStrictly(t *testing.T) {
	lab := referenceLab(t)
	st := testStore()
	arts, err := Build(lab, st)
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.ParseX25519Identity(testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, a := range arts {
		files[a.Path] = true
		for d := path.Dir(a.Path); d != "."; d = path.Dir(d) {
			files[d] = true // folders, which kustomizations may list
		}
	}
	var secrets []string
	kinds := map[string]int{}
	var releases []*helmv2.HelmRelease
	var fluxKs []*kustomizev1.Kustomization
	namespaces := map[string]bool{}
	for _, a := range arts {
		if !IsManifest(a.Path) {
			continue
		}
		if a.Secret {
			t.Errorf("%s is marked secret: the repository must hold no secret", a.Path)
		}
		objs, err := Decode(a.Path, a.Data)
		if err != nil {
			t.Errorf("strict decoding: %v", err)
			continue
		}
		for _, o := range objs {
			kinds[o.Kind]++
			switch v := o.Value.(type) {
			case *helmv2.HelmRelease:
				releases = append(releases, v)
			case *kustomizev1.Kustomization:
				fluxKs = append(fluxKs, v)
			case *corev1.Namespace:
				namespaces[v.Name] = true
			case *corev1.Secret:
				if o.SOPS == nil {
					t.Errorf("%s: Secret %s in the clear in the repository", a.Path, v.Name)
					continue
				}
				if got := o.SOPS.Recipients(); len(got) != 1 || got[0] != testRecipient || o.SOPS.EncryptedRegex != sops.KubernetesRegex {
					t.Errorf("%s: encrypted to %v with rule %q, want %s and %s", a.Path, got, o.SOPS.EncryptedRegex, testRecipient, sops.KubernetesRegex)
				}
				// In the cluster it is the Secret in the clear.
				plain, err := sops.Decrypt(a.Data, id)
				if err != nil {
					t.Errorf("%s: %v", a.Path, err)
					continue
				}
				dec, err := Decode(a.Path, plain)
				if err != nil || len(dec) != 1 || dec[0].SOPS != nil {
					t.Errorf("%s decrypted: %v", a.Path, err)
					continue
				}
				sec := dec[0].Value.(*corev1.Secret)
				for k, v := range sec.StringData {
					if v == "" {
						t.Errorf("%s: %s is empty", a.Path, k)
					}
				}
				secrets = append(secrets, a.Path+" "+sec.Namespace+"/"+sec.Name)
			case *KustomizeConfig:
				// Every resource a kustomization.yaml lists exists, except
				// Flux's components, fetched at bootstrap.
				for _, r := range v.Resources {
					p := filepath.ToSlash(filepath.Join(filepath.Dir(a.Path), r))
					if !files[p] && r != "gotk-components.yaml" {
						t.Errorf("%s lists %s, which the tree does not hold", a.Path, r)
					}
				}
			}
		}
	}
	if kinds["HelmRelease"] != 8 || kinds["Kustomization"] != 8 || kinds["Secret"] != 4 {
		t.Errorf("kinds = %v, want 8 HelmReleases, 8 Kustomizations (3 Flux, 5 kustomize), 4 Secrets", kinds)
	}
	wantSecrets := []string{
		"apps/nextcloud/nextcloud-admin.sops.yaml nextcloud/nextcloud-admin",
		"apps/nextcloud/nextcloud-db.sops.yaml nextcloud/nextcloud-db",
		"apps/openproject/openproject-db.sops.yaml openproject/openproject-db",
		"infrastructure/controllers/grafana-admin.sops.yaml monitoring/grafana-admin",
	}
	if strings.Join(secrets, "\n") != strings.Join(wantSecrets, "\n") {
		t.Errorf("encrypted secrets:\n%s\nwant:\n%s", strings.Join(secrets, "\n"), strings.Join(wantSecrets, "\n"))
	}
	// Each Flux Kustomization points at a folder of the tree (Flux
	// generates a kustomization.yaml where there is none, as in
	// clusters/<lab>).
	for _, k := range fluxKs {
		dir := strings.TrimPrefix(k.Spec.Path, "./") + "/"
		found := false
		for p := range files {
			found = found || strings.HasPrefix(p, dir)
		}
		if !found {
			t.Errorf("Flux Kustomization %s points at %s, which holds nothing", k.Name, k.Spec.Path)
		}
		// Those holding encrypted secrets decrypt them with the lab's key.
		if k.Name != "flux-system" && (k.Spec.Decryption == nil || k.Spec.Decryption.Provider != "sops" || k.Spec.Decryption.SecretRef == nil || k.Spec.Decryption.SecretRef.Name != SOPSAgeSecret) {
			t.Errorf("Flux Kustomization %s does not decrypt with sops and %s: %+v", k.Name, SOPSAgeSecret, k.Spec.Decryption)
		}
	}
	for _, r := range releases {
		if !namespaces[r.Namespace] {
			t.Errorf("HelmRelease %s is in namespace %s, which the tree does not create", r.Name, r.Namespace)
		}
		if r.Spec.Chart == nil || r.Spec.Chart.Spec.Chart == "" || r.Spec.Values == nil {
			t.Errorf("HelmRelease %s has no chart or values", r.Name)
		}
	}
}

func TestTreeContent(t *testing.T) {
	lab := referenceLab(t)
	arts, err := Tree(lab, Options{})
	if err != nil {
		t.Fatal(err)
	}
	get := func(p string) string {
		for _, a := range arts {
			if a.Path == p {
				return string(a.Data)
			}
		}
		t.Fatalf("the tree has no %s", p)
		return ""
	}
	admin, _ := lab.NetworkByRole(spec.RoleAdmin)
	apps, _ := lab.NetworkByRole(spec.RoleApps)
	allow := admin.CIDR.Masked().String() + "," + lab.VPN.Tunnel.Masked().String()
	tests := []struct{ file, want string }{
		{"clusters/" + lab.Name + "/flux-system/kustomization.yaml", "- gotk-components.yaml"},
		{"infrastructure/controllers/ingress-nginx.yaml", "use-proxy-protocol: \"true\""},
		{"infrastructure/controllers/ingress-nginx.yaml", "proxy-real-ip-cidr: " + apps.CIDR.Masked().String()},
		{"infrastructure/controllers/ingress-nginx.yaml", "http: 30080"},
		{"infrastructure/controllers/ingress-nginx.yaml", "https: 30443"},
		{"infrastructure/controllers/ingress-nginx.yaml", "whitelist-source-range: " + allow},
		{"infrastructure/controllers/kube-prometheus-stack.yaml", "nginx.ingress.kubernetes.io/whitelist-source-range: " + allow},
		{"infrastructure/controllers/kube-prometheus-stack.yaml", "ingressClassName: nginx-admin"},
		{"infrastructure/controllers/victoria-logs.yaml", "ingressClassName: nginx-admin"},
		{"apps/nextcloud/nextcloud.yaml", "size: 20Gi"},
		{"apps/nextcloud/nextcloud.yaml", "host: nextcloud." + lab.Name + ".home.arpa"},
		{"apps/openproject/openproject.yaml", "ingressClassName: nginx\n"},
		{"infrastructure/controllers/ingress-nginx.yaml", "hostPort:\n        enabled: true\n        ports:\n          http: 80\n          https: 443"},
	}
	for _, tt := range tests {
		if got := get(tt.file); !strings.Contains(got, tt.want) {
			t.Errorf("%s lacks %q", tt.file, tt.want)
		}
	}
	for _, a := range arts {
		if a.Path == ".sops.yaml" {
			t.Error("Tree without a SOPS recipient wrote .sops.yaml")
		}
	}
}

// TestAdminPortsOpen checks that the dashboards' ports are among those
// the lab's firewall opens to VPN peers on the admin network, and that the
// public ingress ports are where the load balancer's defaults send traffic.
func TestAdminPortsOpen(t *testing.T) {
	open := map[uint16]bool{}
	for _, p := range firewall.AdminPorts {
		open[p.Number] = true
	}
	for _, p := range []int{AdminHTTPPort, AdminHTTPSPort} {
		if !open[uint16(p)] {
			t.Errorf("the admin ingress listens on %d, which firewall.AdminPorts does not open to VPN peers", p)
		}
	}
	lab := referenceLab(t)
	backends := map[int]bool{}
	for _, f := range lab.LoadBalancer.Frontends {
		backends[f.Backends.Port] = true
	}
	for _, p := range []int{PublicHTTPNodePort, PublicHTTPSNodePort} {
		if !backends[p] {
			t.Errorf("the public ingress NodePort %d is not a backend port of the load balancer (%v)", p, backends)
		}
	}
}

func TestTreeErrors(t *testing.T) {
	lab := referenceLab(t)
	lab.GitOps.Apps = append(lab.GitOps.Apps, spec.App{Name: "wordpress"})
	if _, err := Tree(lab, Options{}); err == nil || !strings.Contains(err.Error(), `no template for app "wordpress"`) {
		t.Errorf("Tree with an unknown app = %v, want an error naming it", err)
	}
	lab = referenceLab(t)
	if _, err := Tree(lab, Options{SOPSRecipient: "ssh-ed25519 AAAA"}); err == nil {
		t.Error("Tree with a non-age SOPS recipient succeeded")
	}
	lab = referenceLab(t)
	lab.GitOps.Repository = "ssh://git@example.net/lab.git"
	arts, err := Tree(lab, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range arts {
		if strings.HasSuffix(a.Path, "gotk-sync.yaml") && !strings.Contains(string(a.Data), "url: ssh://git@example.net/lab.git") {
			t.Errorf("gotk-sync.yaml ignores gitops.repository:\n%s", a.Data)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: a, namespace: b}\nspec:\n  interval: 1m\n  chartt: {}\n", `unknown field "chartt"`},
		{"unknown nested field", "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: a, namespace: b}\nspec:\n  interval: 1m\n  prune: true\n  sourceRef: {kind: GitRepository, name: x, branch: main}\n", `unknown field "branch"`},
		{"duplicate key", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nmetadata: {name: b}\n", "not strict YAML"},
		{"unknown kind", "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: a}\n", `unknown kind "ClusterIssuer"`},
		{"no name", "apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "without metadata.name"},
		{"no namespace", "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {name: a}\nspec: {url: https://x, interval: 1h}\n", "without metadata.namespace"},
		{"bad type", "apiVersion: v1\nkind: Namespace\nmetadata: {name: [a]}\n", "cannot unmarshal"},
		{"empty kustomization", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n", "lists no resources"},
		{"second document", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b, colour: red}\n", `document 2: v1 Namespace: json: unknown field "colour"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("x.yaml", []byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

type memStore map[string][]byte

func (m memStore) PutFile(name string, data []byte) error { m[name] = bytes.Clone(data); return nil }
func (m memStore) GetFile(name string) ([]byte, error) {
	if d, ok := m[name]; ok {
		return d, nil
	}
	return nil, fs.ErrNotExist
}

func TestAppSecrets(t *testing.T) {
	lab := referenceLab(t)
	st := memStore{}
	first, changed, err := AppSecrets(lab, st)
	if err != nil || !changed {
		t.Fatalf("AppSecrets() = changed %v, %v; want a first write", changed, err)
	}
	objs, err := Decode(StateFileAppSecrets, first)
	if err != nil {
		t.Fatalf("the app secrets do not decode strictly: %v", err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.Namespace+"/"+o.Name)
		s := o.Value.(*corev1.Secret)
		for k, v := range s.StringData {
			if v == "" {
				t.Errorf("secret %s/%s key %s is empty", o.Namespace, o.Name, k)
			}
		}
	}
	if got, want := strings.Join(names, " "), "monitoring/grafana-admin nextcloud/nextcloud-admin nextcloud/nextcloud-db openproject/openproject-db"; got != want {
		t.Errorf("app secrets = %s, want %s", got, want)
	}
	// Stable: a second call keeps every password.
	second, changed, err := AppSecrets(lab, st)
	if err != nil || changed || !bytes.Equal(first, second) {
		t.Errorf("second AppSecrets() changed=%v err=%v equal=%v; want the same secrets, no write", changed, err, bytes.Equal(first, second))
	}
	// No password reaches the repository in the clear.
	if _, _, err := SOPSKey(st); err != nil {
		t.Fatal(err)
	}
	arts, err := Build(lab, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		for _, v := range o.Value.(*corev1.Secret).StringData {
			if len(v) < 20 {
				continue // fixed user names
			}
			for _, a := range arts {
				if bytes.Contains(a.Data, []byte(v)) {
					t.Errorf("%s holds a generated password", a.Path)
				}
			}
		}
	}
	// Removing an app drops its secrets; the others keep their values.
	lab.GitOps.Apps = lab.GitOps.Apps[:1]
	third, changed, err := AppSecrets(lab, st)
	if err != nil || !changed {
		t.Fatalf("AppSecrets() after removing an app = changed %v, %v", changed, err)
	}
	if bytes.Contains(third, []byte("openproject-db")) || !bytes.Contains(first, third[:len(third)/2]) {
		t.Errorf("after removing openproject the secrets are:\n(redacted, %d bytes) and should keep the others unchanged", len(third))
	}
	if _, _, err := AppSecrets(lab, memStore{StateFileAppSecrets: []byte("{not yaml")}); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("AppSecrets with a corrupt state file = %v, want an error", err)
	}
}

func TestSOPSKey(t *testing.T) {
	st := memStore{}
	r1, changed, err := SOPSKey(st)
	if err != nil || !changed || !strings.HasPrefix(r1, "age1") {
		t.Fatalf("SOPSKey() = %q, %v, %v; want a new age recipient", r1, changed, err)
	}
	if !strings.HasPrefix(string(st[StateFileSOPSAgeKey]), "AGE-SECRET-KEY-1") {
		t.Error("the state folder does not hold the age identity")
	}
	r2, changed, err := SOPSKey(st)
	if err != nil || changed || r2 != r1 {
		t.Errorf("second SOPSKey() = %q, %v, %v; want %q unchanged", r2, changed, err, r1)
	}
	st[StateFileSOPSAgeKey] = []byte("AGE-SECRET-KEY-1NOTAKEY")
	if _, _, err := SOPSKey(st); err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Errorf("SOPSKey with a corrupt key = %v, want an error that does not quote it", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"))
	f.Add([]byte("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: a, namespace: b}\nspec: {interval: 1m, values: {x: [1]}}\n---\n"))
	f.Add([]byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode("f.yaml", data)
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Value == nil || o.Kind == "" {
				t.Fatalf("Decode returned an empty object without an error: %+v", o)
			}
		}
	})
}

func TestGitAccess(t *testing.T) {
	st := memStore{}
	g, changed, err := LoadOrCreateGitAccess(st)
	if err != nil || !changed {
		t.Fatalf("LoadOrCreateGitAccess() = changed %v, %v", changed, err)
	}
	g2, changed, err := LoadOrCreateGitAccess(st)
	if err != nil || changed || g2.DeployPublic != g.DeployPublic || g2.HostPublic != g.HostPublic {
		t.Errorf("second LoadOrCreateGitAccess changed the keys (%v, %v)", changed, err)
	}
	if _, err := ssh.ParsePrivateKey(g.DeployKey); err != nil {
		t.Errorf("deploy key does not parse as an OpenSSH key: %v", err)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.DeployPublic)); err != nil {
		t.Errorf("deploy public key is not an authorized_keys line: %v", err)
	}
	lab := referenceLab(t)
	repo, _ := Repository(lab)
	sec, err := g.FluxSecret(repo)
	if err != nil {
		t.Fatal(err)
	}
	host, key, err := hostLine(sec["known_hosts"])
	if err != nil || host != "10.10.1.5" || key != strings.Join(strings.Fields(g.HostPublic)[:2], " ") {
		t.Errorf("known_hosts = %q (%v), want the manager's address with its host key", sec["known_hosts"], err)
	}
	if sec, _ := g.FluxSecret("ssh://git@example.net:2222/lab.git"); !strings.HasPrefix(string(sec["known_hosts"]), "[example.net]:2222 ssh-ed25519 ") {
		t.Errorf("known_hosts for a non-default port = %q", sec["known_hosts"])
	}
	if _, err := g.FluxSecret("https://example.net/lab.git"); err == nil {
		t.Error("FluxSecret for an https URL succeeded")
	}
}

func hostLine(b []byte) (host, key string, err error) {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return "", "", errors.New("not one known_hosts line")
	}
	if _, err := ssh.ParsePublicKey(mustB64(f[2])); err != nil {
		return "", "", err
	}
	return f[0], f[1] + " " + f[2], nil
}

func mustB64(s string) []byte {
	b, _ := base64.StdEncoding.DecodeString(s)
	return b
}

// TestEncryptSecrets checks when the encrypted files are reused and when
// they are written again.
func TestEncryptSecrets(t *testing.T) {
	lab := referenceLab(t)
	st := testStore()
	first, err := EncryptSecrets(lab, st, testRecipient)
	if err != nil {
		t.Fatal(err)
	}
	files := func(arts []render.Artifact) map[string][]byte {
		m := map[string][]byte{}
		for _, a := range arts {
			m[a.Path] = a.Data
		}
		return m
	}
	before := files(first)
	id, _ := age.ParseX25519Identity(testIdentity)

	// Nothing changed: the same bytes.
	again, err := EncryptSecrets(lab, st, testRecipient)
	if err != nil {
		t.Fatal(err)
	}
	for p, data := range files(again) {
		if !bytes.Equal(data, before[p]) {
			t.Errorf("%s was encrypted again with nothing changed", p)
		}
	}

	// A password changed in the state folder: only its file changes, and
	// it holds the new value.
	plain := st[StateFileAppSecrets]
	var docs [][]byte
	for _, d := range splitDocs(plain) {
		if bytes.Contains(d, []byte("name: nextcloud-admin")) {
			var o M
			if err := yaml.Unmarshal(d, &o); err != nil {
				t.Fatal(err)
			}
			o["stringData"].(M)["password"] = "a-new-password-set-by-hand"
			d, _ = yaml.Marshal(o)
		}
		docs = append(docs, bytes.TrimSuffix(d, []byte("\n")))
	}
	st[StateFileAppSecrets] = append(bytes.Join(docs, []byte("\n---\n")), '\n')
	changed, err := EncryptSecrets(lab, st, testRecipient)
	if err != nil {
		t.Fatal(err)
	}
	for p, data := range files(changed) {
		same := bytes.Equal(data, before[p])
		if p == "apps/nextcloud/nextcloud-admin.sops.yaml" {
			dec, err := sops.Decrypt(data, id)
			if same || err != nil || !bytes.Contains(dec, []byte("a-new-password-set-by-hand")) {
				t.Errorf("%s after a password change: same=%v, %v", p, same, err)
			}
		} else if !same {
			t.Errorf("%s changed though its secret did not", p)
		}
	}

	// Another lab key: every file is encrypted again, for it.
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	st[StateFileSOPSAgeKey] = []byte(other.String() + "\n")
	rekeyed, err := EncryptSecrets(lab, st, other.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range rekeyed {
		if _, err := sops.Decrypt(a.Data, other); err != nil {
			t.Errorf("%s after a key change: %v", a.Path, err)
		}
		if _, err := sops.Decrypt(a.Data, id); err == nil {
			t.Errorf("%s still opens with the old key", a.Path)
		}
	}

	// An app removed: its file goes, from the tree and from the state.
	lab.GitOps.Apps = lab.GitOps.Apps[:1]
	fewer, err := EncryptSecrets(lab, st, other.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range fewer {
		if strings.Contains(a.Path, "openproject") {
			t.Errorf("%s is still written after openproject was removed", a.Path)
		}
	}
	if bytes.Contains(st[StateFileSealedSecrets], []byte("openproject")) {
		t.Error("the state folder still keeps openproject's encrypted file")
	}

	// A damaged cache costs only a new encryption.
	st[StateFileSealedSecrets] = []byte("{not json")
	if _, err := EncryptSecrets(lab, st, other.Recipient().String()); err != nil {
		t.Errorf("EncryptSecrets with a damaged cache = %v", err)
	}
}

func TestDecodeEncrypted(t *testing.T) {
	id, _ := age.ParseX25519Identity(testIdentity)
	plain := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: ns1\nstringData:\n  password: hunter2-hunter2\n"
	enc, err := sops.Encrypt([]byte(plain), sops.Options{Recipients: []string{id.Recipient().String()}, EncryptedRegex: sops.KubernetesRegex})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode("s.sops.yaml", enc)
	if err != nil || len(objs) != 1 || objs[0].SOPS == nil || objs[0].Name != "s" {
		t.Fatalf("Decode(encrypted) = %+v, %v", objs, err)
	}
	tests := []struct{ name, doc, want string }{
		{"a value in the clear", strings.Replace(string(enc), "stringData:\n", "stringData:\n    leaked: hunter2-hunter2\n", 1), "stringData.leaked is not encrypted"},
		{"no age key", plain + "sops:\n  lastmodified: '2026-01-01T00:00:00Z'\n  mac: x\n", "no age key"},
		{"unknown field", strings.Replace(string(enc), "kind: Secret\n", "kind: Secret\ncolour: red\n", 1), `unknown field "colour"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("s.sops.yaml", []byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode() = %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
	if IsManifest(".sops.yaml") || !IsManifest("apps/x/s.sops.yaml") {
		t.Error("IsManifest: .sops.yaml holds rules, *.sops.yaml manifests")
	}
}

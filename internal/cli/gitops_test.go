package cli

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/sops"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/standin"
)

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			files[filepath.ToSlash(rel)] = data
		}
		return nil
	})
	return files
}

func TestGitopsInitCommand(t *testing.T) {
	dir := labDir(t)
	lab := filepath.Join(dir, "lab.yaml")
	code, stdout, stderr := runCLI(t, "gitops", "init", "-f", lab)
	if code != 0 {
		t.Fatalf("gitops init exit %d: %s", code, stderr)
	}
	for _, want := range []string{"wrote the gitops repository of lab", "Flux " + gitops.FluxVersion, "clusters/", "SOPS recipient: age1", "created, encrypted", "apps/nextcloud/nextcloud-db.sops.yaml"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("gitops init output lacks %q:\n%s", want, stdout)
		}
	}
	first := readTree(t, filepath.Join(dir, "gitops"))
	if len(first) < 10 {
		t.Fatalf("gitops init wrote %d files", len(first))
	}
	encrypted := map[string]*corev1.Secret{}
	for p, data := range first {
		if !gitops.IsManifest(p) {
			continue
		}
		objs, err := gitops.Decode(p, data)
		if err != nil {
			t.Errorf("strict decoding: %v", err)
		}
		for _, o := range objs {
			if s, ok := o.Value.(*corev1.Secret); ok {
				if o.SOPS == nil {
					t.Errorf("%s: Secret %s in the clear", p, s.Name)
				}
				encrypted[p] = s
			}
		}
	}
	if len(encrypted) != 4 {
		t.Errorf("the tree holds %d encrypted Secrets, want 4 (grafana-admin, nextcloud-admin, nextcloud-db, openproject-db)", len(encrypted))
	}
	// Again: same files, secrets reused.
	code, stdout, stderr = runCLI(t, "gitops", "init", "-f", lab)
	if code != 0 || !strings.Contains(stdout, "reused from") {
		t.Fatalf("second gitops init exit %d: %s%s", code, stdout, stderr)
	}
	second := readTree(t, filepath.Join(dir, "gitops"))
	for p := range first {
		if !bytes.Equal(first[p], second[p]) {
			t.Errorf("%s changed on the second gitops init", p)
		}
	}
	// The passwords are in the state folder only, encrypted.
	st, err := secrets.Open(filepath.Join(dir, secrets.StateDirName))
	if err != nil {
		t.Fatal(err)
	}
	appSecrets, err := st.GetFile(gitops.StateFileAppSecrets)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := gitops.Decode("secrets", appSecrets)
	if err != nil || len(objs) == 0 {
		t.Fatalf("app secrets: %d objects, %v", len(objs), err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, secrets.StateDirName, gitops.StateFileAppSecrets+".age"))
	if bytes.Contains(raw, []byte("stringData")) {
		t.Error("the app secrets are in the clear in the state folder")
	}
	// The repository's encrypted files open with the lab's SOPS key to
	// the passwords of the state folder, which appear nowhere in the clear.
	key, err := st.GetFile(gitops.StateFileSOPSAgeKey)
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(key)))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		want := o.Value.(*corev1.Secret)
		p := ""
		for path, s := range encrypted {
			if s.Name == want.Name && s.Namespace == want.Namespace {
				p = path
			}
		}
		if p == "" {
			t.Errorf("secret %s/%s is not in the repository", want.Namespace, want.Name)
			continue
		}
		plain, err := sops.Decrypt(first[p], id)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		dec, err := gitops.Decode(p, plain)
		if err != nil || len(dec) != 1 || !reflect.DeepEqual(dec[0].Value.(*corev1.Secret).StringData, want.StringData) {
			t.Errorf("%s does not decrypt to the state folder's %s/%s (%v)", p, want.Namespace, want.Name, err)
		}
		for k, v := range want.StringData {
			for fp, data := range first {
				if len(v) >= 20 && bytes.Contains(data, []byte(v)) {
					t.Errorf("%s holds the password %s/%s %s in the clear", fp, want.Namespace, want.Name, k)
				}
			}
		}
	}
}

// fakeAPI is a minimal Kubernetes API behind client-certificate TLS:
// discovery and server-side apply, recorded (paths, and the bodies in
// applied).
type fakeAPI struct {
	mu      sync.Mutex
	patches []string
	applied []appliedObject
	crds    map[string]bool
}

// appliedObject is one server-side apply the fake API received.
type appliedObject struct {
	Path string
	Body []byte
}

// since returns the applies from the i-th on.
func (f *fakeAPI) since(i int) []appliedObject {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]appliedObject(nil), f.applied[i:]...)
}

// fingerprint names key material in a failure message without showing
// it: its length and the start of its SHA-256.
func fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%d bytes, sha256 %x", len(b), sum[:6])
}

// checkFluxObjects checks the objects a Flux bootstrap applied against
// the lab: the sops-age secret holds the lab's age identity, the
// flux-system secret the lab's deploy key and a known_hosts line for the
// manager's admin address with the manager's SSH host key (the public
// half of the key the manager's Git server is given), and the
// GitRepository pulls the manager's repository at the lab's branch with
// that secret. Key material is never printed, only fingerprints.
func checkFluxObjects(t *testing.T, applied []appliedObject, lab *spec.Lab, store *secrets.Store) {
	t.Helper()
	access, created, err := gitops.LoadOrCreateGitAccess(store)
	if err != nil || created {
		t.Fatalf("the lab's git access keys: created now %v, %v", created, err)
	}
	ageKey, err := store.GetFile(gitops.StateFileSOPSAgeKey)
	if err != nil {
		t.Fatal(err)
	}
	var manager netip.Addr
	for _, m := range lab.Machines() {
		if m.Role == spec.MachineManager {
			manager, _ = m.Address(spec.RoleAdmin)
		}
	}
	if !manager.IsValid() {
		t.Fatal("the test lab has no manager on the admin network")
	}
	hostKey, err := ssh.ParsePrivateKey(access.HostKey)
	if err != nil {
		t.Fatalf("the manager's host key does not parse: %v", err)
	}
	hostPub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey())))

	find := func(path string) []byte {
		for _, a := range applied {
			if a.Path == path {
				return a.Body
			}
		}
		t.Errorf("%s was not applied", path)
		return nil
	}
	secret := func(name string) *corev1.Secret {
		var s corev1.Secret
		if body := find("/api/v1/namespaces/flux-system/secrets/" + name); body != nil {
			if err := json.Unmarshal(body, &s); err != nil {
				t.Errorf("secret %s: the applied body is not a Secret: %v", name, err)
			}
		}
		return &s
	}

	sopsAge := secret("sops-age")
	if got := sopsAge.Data["age.agekey"]; !bytes.Equal(got, ageKey) {
		t.Errorf("sops-age age.agekey: %s, want the lab's age identity (%s)", fingerprint(got), fingerprint(ageKey))
	}
	if _, err := age.ParseIdentities(bytes.NewReader(sopsAge.Data["age.agekey"])); err != nil {
		t.Errorf("sops-age age.agekey does not parse as an age identity (%s)", fingerprint(sopsAge.Data["age.agekey"]))
	}

	git := secret("flux-system")
	if got := git.Data["identity"]; !bytes.Equal(got, access.DeployKey) {
		t.Errorf("flux-system identity: %s, want the lab's deploy key (%s)", fingerprint(got), fingerprint(access.DeployKey))
	}
	if got, want := string(git.Data["identity.pub"]), access.DeployPublic+"\n"; got != want {
		t.Errorf("flux-system identity.pub = %q, want %q", got, want)
	}
	if got, want := string(git.Data["known_hosts"]), manager.String()+" "+hostPub+"\n"; got != want {
		t.Errorf("flux-system known_hosts = %q, want %q (the manager's admin address and host key)", got, want)
	}

	var repo sourcev1.GitRepository
	if body := find("/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system"); body != nil {
		if err := json.Unmarshal(body, &repo); err != nil {
			t.Errorf("the applied GitRepository does not decode: %v", err)
		}
	}
	wantURL := "ssh://git@" + manager.String() + "/srv/git/" + lab.Name + ".git"
	if repo.Spec.URL != wantURL || repo.Spec.Reference == nil || repo.Spec.Reference.Branch != lab.GitOps.Branch || lab.GitOps.Branch == "" {
		t.Errorf("GitRepository url %q ref %+v, want %q branch %q", repo.Spec.URL, repo.Spec.Reference, wantURL, lab.GitOps.Branch)
	}
	if repo.Spec.SecretRef == nil || repo.Spec.SecretRef.Name != "flux-system" {
		t.Errorf("GitRepository secretRef %+v, want flux-system", repo.Spec.SecretRef)
	}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := func(gv string, rs ...metav1.APIResource) {
		json.NewEncoder(w).Encode(metav1.APIResourceList{GroupVersion: gv, APIResources: rs})
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1":
		res("v1", metav1.APIResource{Name: "namespaces", Kind: "Namespace"}, metav1.APIResource{Name: "secrets", Kind: "Secret", Namespaced: true})
	case r.Method == http.MethodGet && r.URL.Path == "/apis/apiextensions.k8s.io/v1":
		res("apiextensions.k8s.io/v1", metav1.APIResource{Name: "customresourcedefinitions", Kind: "CustomResourceDefinition"})
	case r.Method == http.MethodGet && r.URL.Path == "/apis/source.toolkit.fluxcd.io/v1" && f.crds["gitrepositories.source.toolkit.fluxcd.io"]:
		res("source.toolkit.fluxcd.io/v1", metav1.APIResource{Name: "gitrepositories", Kind: "GitRepository", Namespaced: true})
	case r.Method == http.MethodGet && r.URL.Path == "/apis/kustomize.toolkit.fluxcd.io/v1" && f.crds["kustomizations.kustomize.toolkit.fluxcd.io"]:
		res("kustomize.toolkit.fluxcd.io/v1", metav1.APIResource{Name: "kustomizations", Kind: "Kustomization", Namespaced: true})
	case r.Method == http.MethodPatch && r.Header.Get("Content-Type") == "application/apply-patch+yaml":
		body, _ := io.ReadAll(r.Body)
		f.patches = append(f.patches, r.URL.Path)
		f.applied = append(f.applied, appliedObject{Path: r.URL.Path, Body: body})
		if name, ok := strings.CutPrefix(r.URL.Path, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"); ok {
			f.crds[name] = true
		}
		w.Write(body)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"kind":"Status","status":"Failure","message":"not found","reason":"NotFound","code":404}`)
	}
}

const cliComponents = `apiVersion: v1
kind: Namespace
metadata: {name: flux-system}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gitrepositories.source.toolkit.fluxcd.io}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kustomizations.kustomize.toolkit.fluxcd.io}
`

func TestGitopsBootstrapCommand(t *testing.T) {
	dir := labDir(t)
	lab := filepath.Join(dir, "lab.yaml")

	// A Kubernetes API that wants the admin's client certificate.
	api, kubeconfig := startFakeKubeAPI(t)
	comps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, cliComponents) }))
	defer comps.Close()

	st, err := secrets.Open(filepath.Join(dir, secrets.StateDirName))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutFile("kubeconfig", []byte(kubeconfig)); err != nil {
		t.Fatal(err)
	}

	if code, _, stderr := runCLI(t, "gitops", "init", "-f", lab); code != 0 {
		t.Fatalf("gitops init: %s", stderr)
	}
	code, stdout, stderr := runCLI(t, "gitops", "bootstrap", "-f", lab, "--via", "direct", "--components-url", comps.URL+"/install.yaml")
	if code != 0 {
		t.Fatalf("gitops bootstrap exit %d:\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"reaching the admin network directly", "flux components applied (3 objects)", "flux " + gitops.FluxVersion + " installed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	found := false
	for p, data := range readTree(t, filepath.Join(dir, "gitops")) {
		if strings.HasSuffix(p, "/flux-system/gotk-components.yaml") {
			found = true
			if string(data) != cliComponents {
				t.Errorf("%s is not the install manifests that were applied", p)
			}
		}
	}
	if !found {
		t.Errorf("gitops bootstrap did not add gotk-components.yaml to the repository:\n%s", stdout)
	}
	api.mu.Lock()
	got := strings.Join(api.patches, "\n")
	api.mu.Unlock()
	// Exactly: the install manifests, the SOPS key, the Git credentials
	// (the repository is the manager's: the lab's deploy key), the sync.
	// No app secret: those come SOPS-encrypted from the repository.
	want := strings.Join([]string{
		"/api/v1/namespaces/flux-system",
		"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gitrepositories.source.toolkit.fluxcd.io",
		"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/kustomizations.kustomize.toolkit.fluxcd.io",
		"/api/v1/namespaces/flux-system/secrets/sops-age",
		"/api/v1/namespaces/flux-system/secrets/flux-system",
		"/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system",
		"/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/flux-system",
	}, "\n")
	if got != want {
		t.Errorf("applied:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(stdout, "with the lab's deploy key") {
		t.Errorf("no Git credentials for the manager's repository:\n%s", stdout)
	}
	spc, _, err := spec.Load(lab)
	if err != nil {
		t.Fatal(err)
	}
	checkFluxObjects(t, api.since(0), spc, st)
	// Half of the Git credentials is a mistake with a hint.
	code, _, stderr = runCLI(t, "gitops", "bootstrap", "-f", lab, "--via", "direct", "--git-identity", lab)
	if code == 0 || !strings.Contains(stderr, "--git-identity and --known-hosts go together") {
		t.Errorf("gitops bootstrap with only --git-identity: exit %d, %s", code, stderr)
	}
}

// startFakeKubeAPI serves fakeAPI over TLS with client certificates
// required, as the Kubernetes API does, and returns it with an admin
// kubeconfig for it.
func startFakeKubeAPI(t *testing.T) (*fakeAPI, string) {
	t.Helper()
	caCrt, caKey, err := standin.NewCA("test kubernetes CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCrt, srvKey, err := standin.IssueCerts(caCrt, caKey, []string{"kubernetes"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	cliCrt, cliKey, err := standin.IssueClientCert(caCrt, caKey, "admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(srvCrt, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCrt)
	api := &fakeAPI{crds: map[string]bool{}}
	ks := httptest.NewUnstartedServer(api)
	ks.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	ks.StartTLS()
	t.Cleanup(ks.Close)
	b64 := base64.StdEncoding.EncodeToString
	return api, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: %s, certificate-authority-data: %s}
users:
- name: admin@lab
  user: {client-certificate-data: %s, client-key-data: %s}
contexts:
- name: admin@lab
  context: {cluster: lab, user: admin@lab}
current-context: admin@lab
`, ks.URL, b64(caCrt), b64(cliCrt), b64(cliKey))
}

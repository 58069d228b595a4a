package cli

import (
	"bytes"
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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/sops"
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
// discovery and server-side apply, recorded.
type fakeAPI struct {
	mu      sync.Mutex
	patches []string
	crds    map[string]bool
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
		f.patches = append(f.patches, r.URL.Path)
		if name, ok := strings.CutPrefix(r.URL.Path, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"); ok {
			f.crds[name] = true
		}
		io.Copy(w, r.Body)
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
	kp, _ := tls.X509KeyPair(srvCrt, srvKey)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCrt)
	api := &fakeAPI{crds: map[string]bool{}}
	ks := httptest.NewUnstartedServer(api)
	ks.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	ks.StartTLS()
	defer ks.Close()
	comps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, cliComponents) }))
	defer comps.Close()

	b64 := base64.StdEncoding.EncodeToString
	kubeconfig := fmt.Sprintf(`apiVersion: v1
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
	// Half of the Git credentials is a mistake with a hint.
	code, _, stderr = runCLI(t, "gitops", "bootstrap", "-f", lab, "--via", "direct", "--git-identity", lab)
	if code == 0 || !strings.Contains(stderr, "--git-identity and --known-hosts go together") {
		t.Errorf("gitops bootstrap with only --git-identity: exit %d, %s", code, stderr)
	}
}

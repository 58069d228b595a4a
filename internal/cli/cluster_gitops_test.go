package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/gitrepo"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
)

// redirect dials some admin-network addresses at local test servers, as
// the tunnel would carry them to the manager.
type redirect map[string]string

func (r redirect) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if to, ok := r[addr]; ok {
		addr = to
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (redirect) Close() error { return nil }

// TestGitopsPhaseRealCluster runs apply's gitops phase as on a real
// (not stand-in) cluster: Flux bootstrapped through the Kubernetes API
// with exactly its install manifests, the SOPS key, the deploy key and
// the sync; then one commit pushed over SSH to the manager's repository
// holding the tree and Flux's install manifests; a second run pushes
// nothing.
func TestGitopsPhaseRealCluster(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (the test's Git server runs git receive-pack): install git")
	}
	lab, store, b := openTestLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The manager's Git server, with the lab's host key and the keys
	// homelab pushes and Flux fetches with.
	ln, gitDir, repoURL := startManagerGit(ctx, t, lab, store)
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}

	// The cluster's Kubernetes API (client certificates required) and
	// the Flux release's install manifests.
	api, kubeconfig := startFakeKubeAPI(t)
	var downloads atomic.Int32
	comps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		downloads.Add(1)
		io.WriteString(w, cliComponents)
	}))
	defer comps.Close()

	lc := &labContext{Lab: lab, Store: store, Bundle: b}
	cl := &clusterRun{
		dialer:     redirect{u.Host + ":22": ln.Addr().String()},
		res:        &bootstrap.Result{Standin: false},
		kubeconfig: []byte(kubeconfig),
	}
	var out bytes.Buffer
	if err := runGitops(ctx, &out, lc, cl, fluxOptions{ComponentsURL: comps.URL + "/install.yaml"}); err != nil {
		t.Fatalf("runGitops: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"flux: flux components applied (3 objects)", "flux: pulls " + repoURL + " with the lab's deploy key",
		"flux: " + gitops.FluxVersion + " installed", "gitops: pushed commit ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "NOT installed") {
		t.Errorf("a real cluster was reported as stand-ins:\n%s", out.String())
	}
	api.mu.Lock()
	got := strings.Join(api.patches, "\n")
	api.mu.Unlock()
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
		t.Errorf("applied to the Kubernetes API:\n%s\nwant:\n%s", got, want)
	}
	first := api.since(0)
	checkFluxObjects(t, first, lab, store)

	// One commit, with the tree and Flux's install manifests.
	bare := filepath.Join(gitDir, lab.Name+".git")
	git := func(args ...string) string {
		t.Helper()
		o, err := exec.Command("git", append([]string{"--git-dir", bare}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, o)
		}
		return string(o)
	}
	if log := strings.TrimSpace(git("log", "--format=%s", "main")); log != "homelab apply: the lab's repository and Flux "+gitops.FluxVersion {
		t.Errorf("history = %q, want one commit with the tree and Flux", log)
	}
	if c := git("show", "main:"+gitops.ComponentsPath(lab.Name)); c != cliComponents {
		t.Errorf("%s in the repository is not the manifests Flux was installed from:\n%s", gitops.ComponentsPath(lab.Name), c)
	}
	files := git("ls-tree", "-r", "--name-only", "main")
	for _, f := range []string{"clusters/" + lab.Name + "/flux-system/gotk-sync.yaml", ".sops.yaml"} {
		if !strings.Contains(files, f+"\n") {
			t.Errorf("the repository lacks %s:\n%s", f, files)
		}
	}
	if !strings.Contains(files, ".sops.yaml\n") || !strings.Contains(files, "-admin.sops.yaml") {
		t.Errorf("the repository has no SOPS-encrypted secrets:\n%s", files)
	}

	// The same spec again: Flux re-applied (idempotent) from the install
	// manifests kept in the state folder (no download), nothing pushed.
	// Exactly the same seven objects are applied again, in the same
	// order, with byte-identical bodies: the same install manifests,
	// the same SOPS key and deploy key, the same sync.
	out.Reset()
	if err := runGitops(ctx, &out, lc, cl, fluxOptions{}); err != nil {
		t.Fatalf("second runGitops: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "already holds this tree") || strings.Contains(out.String(), "pushed commit") {
		t.Errorf("second run pushed again:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "install manifests of "+gitops.FluxVersion+" from the state folder") || downloads.Load() != 1 {
		t.Errorf("second run downloaded Flux's install manifests again (%d downloads):\n%s", downloads.Load(), out.String())
	}
	second := api.since(len(first))
	if len(second) != len(first) {
		t.Errorf("second run applied %d objects, want the same %d again", len(second), len(first))
	}
	for i := range min(len(first), len(second)) {
		if second[i].Path != first[i].Path || !bytes.Equal(second[i].Body, first[i].Body) {
			t.Errorf("second run's apply %d: %s (%s), want %s again (%s)", i, second[i].Path, fingerprint(second[i].Body), first[i].Path, fingerprint(first[i].Body))
		}
	}
	if n := strings.Count(git("log", "--format=%H", "main"), "\n"); n != 1 {
		t.Errorf("the repository has %d commits after two runs, want 1", n)
	}
}

// TestGitopsPhaseStandins: on stand-ins the tree is pushed and Flux is
// said not to be installed; the Kubernetes API is never called.
func TestGitopsPhaseStandins(t *testing.T) {
	lab, store, b := openTestLab(t)
	lab.GitOps.Repository = "ssh://git@example.org/own/repo.git" // not homelab's to push
	var out bytes.Buffer
	called := false
	cl := &clusterRun{dialer: dialFunc(func() { called = true }), res: &bootstrap.Result{Standin: true}}
	if err := runGitops(context.Background(), &out, &labContext{Lab: lab, Store: store, Bundle: b}, cl, fluxOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"which homelab does not push to", "Flux is NOT installed: the cluster is made of homelab stand-ins"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if called {
		t.Error("the gitops phase dialed something for a stand-in cluster with a repository of the user's own")
	}
}

type dialFunc func()

func (f dialFunc) DialContext(context.Context, string, string) (net.Conn, error) {
	f()
	return nil, fmt.Errorf("no network in this test")
}

func (dialFunc) Close() error { return nil }

// startManagerGit serves the lab's repository as the manager does: a bare
// repository behind gitrepo's SSH server with the lab's host key, homelab's
// push key and Flux's deploy key. It returns the listener, the folder of
// the bare repositories and the repository's URL in the lab.
func startManagerGit(ctx context.Context, t *testing.T, lab *spec.Lab, store *secrets.Store) (net.Listener, string, string) {
	t.Helper()
	access, _, err := gitops.LoadOrCreateGitAccess(store)
	if err != nil {
		t.Fatal(err)
	}
	push, _, err := gitrepo.LoadOrCreatePushKey(store)
	if err != nil {
		t.Fatal(err)
	}
	repoURL, err := gitops.Repository(lab)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	authorized, err := render.GitAuthorizedKeys(u.Path, push.Public, access.DeployPublic)
	if err != nil {
		t.Fatal(err)
	}
	gitDir := t.TempDir()
	if err := gitrepo.InitBare(ctx, "", gitDir, lab.Name); err != nil {
		t.Fatal(err)
	}
	gs := &gitrepo.Server{Dir: gitDir, HostKey: access.HostKey, Authorized: []byte(authorized)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ctx, ln)
	t.Cleanup(func() { gs.Close() })
	return ln, gitDir, repoURL
}

package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/gitrepo"
	"github.com/homelab-dev/homelab/internal/render"
)

// toServer dials every address at one local test server, as the tunnel
// would carry the manager's address to it; calls counts the dials.
type toServer struct {
	addr  string
	calls *int
}

func (s toServer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	*s.calls++
	var d net.Dialer
	return d.DialContext(ctx, network, s.addr)
}

func (toServer) Close() error { return nil }

// TestGitopsPush: homelab gitops push pushes the tree (with the kept Flux
// install manifests), refuses commits pushed by hand with a hint naming
// --force, and with --force puts the tree on top of them.
func TestGitopsPush(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (the test's Git server runs git receive-pack): install git")
	}
	lab, store, _ := openTestLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, gitDir, repoURL := startManagerGit(ctx, t, lab, store)
	// The keys the server was started with, for a push from outside.
	access, _, err := gitops.LoadOrCreateGitAccess(store)
	if err != nil {
		t.Fatal(err)
	}
	push, _, err := gitrepo.LoadOrCreatePushKey(store)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	d := toServer{addr: ln.Addr().String(), calls: &calls}
	git := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("git", append([]string{"-C", filepath.Join(gitDir, lab.Name+".git")}, args...)...).Output()
		if err != nil {
			t.Fatalf("git %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	if err := store.PutFile(fluxComponentsFile, []byte("# flux install manifests\n")); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := gitopsPush(ctx, &out, lab, store, d, false); err != nil {
		t.Fatalf("gitops push: %v", err)
	}
	if !strings.Contains(out.String(), "gitops: pushed commit") {
		t.Errorf("output lacks the pushed commit:\n%s", out.String())
	}
	if got := git("cat-file", "blob", "main:"+gitops.ComponentsPath(lab.Name)); got != "# flux install manifests\n" {
		t.Errorf("the pushed tree's %s = %q, want the kept install manifests", gitops.ComponentsPath(lab.Name), got)
	}
	first := strings.TrimSpace(git("rev-parse", "main"))

	// Someone pushes by hand (here: another state folder's push).
	tg, err := gitrepo.TargetFromURL(repoURL, d.DialContext, access.HostPublic, push.Key)
	if err != nil {
		t.Fatal(err)
	}
	hand, err := gitrepo.Push(ctx, tg, []render.Artifact{{Path: "hand.txt", Data: []byte("by hand\n")}}, gitrepo.Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}

	err = gitopsPush(ctx, &out, lab, store, d, false)
	var moved *gitrepo.MovedError
	var h *hintError
	if !errors.As(err, &moved) || !errors.As(err, &h) || !strings.Contains(h.Hint(), "homelab gitops push --force") {
		t.Fatalf("gitops push after a hand push = %v, want a MovedError with a hint naming homelab gitops push --force", err)
	}
	// apply's gitops phase gives the same hint.
	if err := pushTree(ctx, &out, lab, store, d, nil, "m"); !errors.As(err, &h) || !strings.Contains(h.Hint(), "homelab gitops push --force") {
		t.Errorf("pushTree after a hand push = %v, want the --force hint", err)
	}

	out.Reset()
	if err := gitopsPush(ctx, &out, lab, store, d, true); err != nil {
		t.Fatalf("gitops push --force: %v", err)
	}
	if want := "on top of " + hand.Commit.String()[:12]; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
	if got := git("log", "--format=%H", "main"); !strings.Contains(got, hand.Commit.String()) || !strings.Contains(got, first) {
		t.Errorf("history after --force lacks the hand-made commit or the first push:\n%s", got)
	}
	if _, err := exec.Command("git", "-C", filepath.Join(gitDir, lab.Name+".git"), "cat-file", "-e", "main:hand.txt").Output(); err == nil {
		t.Error("the hand-made file is still in the tree after --force")
	}
	out.Reset()
	if err := gitopsPush(ctx, &out, lab, store, d, false); err != nil || !strings.Contains(out.String(), "already holds this tree") {
		t.Errorf("gitops push after --force = %v:\n%s\nwant nothing pushed", err, out.String())
	}
}

// TestGitopsPushOwnRepository: a gitops.repository of the user's own is
// not pushed to, nor dialed.
func TestGitopsPushOwnRepository(t *testing.T) {
	lab, store, _ := openTestLab(t)
	lab.GitOps.Repository = "ssh://git@example.org/own/repo.git"
	calls := 0
	err := gitopsPush(context.Background(), &bytes.Buffer{}, lab, store, toServer{addr: "127.0.0.1:1", calls: &calls}, true)
	if err == nil || !strings.Contains(err.Error(), "which homelab does not push to") {
		t.Errorf("gitops push to a repository of one's own = %v", err)
	}
	if calls != 0 {
		t.Errorf("dialed %d times", calls)
	}
	push, _, err := newGitopsCmd().Find([]string{"push"})
	if err != nil || push.Name() != "push" || push.Flags().Lookup("force") == nil {
		t.Errorf("homelab gitops push --force is not registered: %v", err)
	}
}

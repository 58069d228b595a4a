package gitrepo

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/render"
)

var arts1 = []render.Artifact{
	{Path: "README.md", Data: []byte("# lab\n")},
	{Path: "clusters/lab/apps.yaml", Data: []byte("kind: Kustomization\n")},
	{Path: "clusters/lab/flux-system/gotk-sync.yaml", Data: []byte("kind: GitRepository\n")},
	{Path: "clusters/lab-x.yaml", Data: []byte("sorts before clusters/ in git's order\n")},
	{Path: "empty", Data: nil},
	{Path: ".sops.yaml", Data: []byte("creation_rules: []\n")},
	{Path: "bin/data", Data: []byte{0, 1, 2, 255, '\n', 0}},
}

// TestTreeMatchesGit checks the tree ids against git write-tree of the
// same files.
func TestTreeMatchesGit(t *testing.T) {
	needGit(t)
	for _, tc := range []struct {
		name string
		arts []render.Artifact
	}{
		{"files", arts1},
		{"one", []render.Artifact{{Path: "a", Data: []byte("x")}}},
		{"names sorting around /", []render.Artifact{
			{Path: "a.b", Data: []byte("1")}, {Path: "a/b", Data: []byte("2")}, {Path: "a-b", Data: []byte("3")},
			{Path: "a0", Data: []byte("4")}, {Path: "ab/c", Data: []byte("5")}}},
		{"big", []render.Artifact{{Path: "big", Data: []byte(strings.Repeat("0123456789abcdef", 70000))}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			git(t, dir, nil, "init", "--quiet")
			for _, a := range tc.arts {
				p := filepath.Join(dir, filepath.FromSlash(a.Path))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, a.Data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			git(t, dir, nil, "add", "-A")
			want := strings.TrimSpace(git(t, dir, nil, "write-tree"))
			s, err := BuildTree(tc.arts)
			if err != nil {
				t.Fatal(err)
			}
			if s.Tree.String() != want {
				t.Errorf("BuildTree = %s, git write-tree = %s", s.Tree, want)
			}
		})
	}
}

func TestBuildTreeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		arts []render.Artifact
		want string
	}{
		{"secret", []render.Artifact{{Path: "k", Data: []byte("PRIVATE"), Secret: true}}, "k is secret"},
		{"absolute", []render.Artifact{{Path: "/etc/x"}}, "not a clean relative path"},
		{"dotdot", []render.Artifact{{Path: "../x"}}, "not a clean relative path"},
		{"unclean", []render.Artifact{{Path: "a//b"}}, "not a clean relative path"},
		{"dot git", []render.Artifact{{Path: "a/.git/config"}}, ".git folder"},
		{"duplicate", []render.Artifact{{Path: "a"}, {Path: "a"}}, "two artifacts named a"},
		{"file then folder", []render.Artifact{{Path: "a"}, {Path: "a/b"}}, "both a file and a folder"},
		{"folder then file", []render.Artifact{{Path: "a/b"}, {Path: "a"}}, "two artifacts named a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildTree(tc.arts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("BuildTree = %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE") {
				t.Errorf("the error quotes the secret's content: %v", err)
			}
		})
	}
}

func TestPackRoundTrip(t *testing.T) {
	s, err := BuildTree(arts1)
	if err != nil {
		t.Fatal(err)
	}
	c := s.commit(ZeroID, Signature{Name: "a", Email: "b", When: time.Unix(1, 0).UTC()}, "m")
	var buf strings.Builder
	if err := writePack(&buf, s.objects); err != nil {
		t.Fatal(err)
	}
	got, err := readPack([]byte(buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(s.objects) {
		t.Fatalf("read %d objects, wrote %d", len(got), len(s.objects))
	}
	ids := map[ID]bool{}
	for _, o := range got {
		ids[o.id()] = true
	}
	if !ids[c] || !ids[s.Tree] {
		t.Errorf("the pack lacks the commit or the root tree")
	}
	for _, size := range []int{0, 15, 16, 127, 2047, 2048, 1 << 20} {
		h := objectHeader(typeBlob, size)
		c, n, shift := h[0], int(h[0]&0x0f), 4
		for i := 1; c&0x80 != 0; i++ {
			c = h[i]
			n |= int(c&0x7f) << shift
			shift += 7
		}
		if n != size || int(h[0]>>4&7) != typeBlob {
			t.Errorf("objectHeader(blob, %d) decodes to %d", size, n)
		}
	}
}

func TestSignature(t *testing.T) {
	for _, tc := range []struct {
		when time.Time
		want string
	}{
		{time.Unix(1700000000, 0).UTC(), "n <e> 1700000000 +0000"},
		{time.Unix(1700000000, 0).In(time.FixedZone("", -(5*3600 + 30*60))), "n <e> 1700000000 -0530"},
		{time.Unix(1700000000, 0).In(time.FixedZone("", 3600)), "n <e> 1700000000 +0100"},
	} {
		if got := (Signature{"n", "e", tc.when}).String(); got != tc.want {
			t.Errorf("Signature = %q, want %q", got, tc.want)
		}
	}
}

// TestPushIntoGit pushes into a real bare repository through the server
// and checks it with git itself.
func TestPushIntoGit(t *testing.T) {
	l := startServer(t)
	ctx := context.Background()
	st := memStore{}
	when := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	opts := Options{Message: "homelab: first", Author: Signature{When: when}, State: st}

	r1, err := Push(ctx, l.target(), arts1, opts)
	if err != nil {
		t.Fatalf("first Push: %v", err)
	}
	if !r1.Pushed || !r1.Parent.IsZero() {
		t.Errorf("first Push = %+v, want pushed without a parent", r1)
	}
	git(t, l.repo, nil, "fsck", "--strict", "--no-dangling")
	checkRepo(t, l.repo, arts1)
	if got := strings.TrimSpace(git(t, l.repo, nil, "rev-parse", "main")); got != r1.Commit.String() {
		t.Errorf("main = %s, Push said %s", got, r1.Commit)
	}
	if got := git(t, l.repo, nil, "log", "--format=%an <%ae> %at%n%B", "main"); got != "homelab <homelab@localhost> 1795435200\nhomelab: first\n\n" {
		t.Errorf("git log = %q", got)
	}

	// The same tree again: nothing pushed.
	r2, err := Push(ctx, l.target(), arts1, opts)
	if err != nil {
		t.Fatalf("second Push: %v", err)
	}
	if r2.Pushed || r2.Commit != r1.Commit {
		t.Errorf("second Push = %+v, want nothing pushed at %s", r2, r1.Commit)
	}

	// A changed tree: a second commit on top of the first.
	arts2 := append([]render.Artifact{{Path: "apps/new.yaml", Data: []byte("new: true\n")}}, arts1[1:]...)
	opts.Message = "homelab: second"
	r3, err := Push(ctx, l.target(), arts2, opts)
	if err != nil {
		t.Fatalf("third Push: %v", err)
	}
	if !r3.Pushed || r3.Parent != r1.Commit {
		t.Errorf("third Push = %+v, want a commit with parent %s", r3, r1.Commit)
	}
	git(t, l.repo, nil, "fsck", "--strict", "--no-dangling")
	checkRepo(t, l.repo, arts2)
	if got, want := git(t, l.repo, nil, "log", "--format=%H %P %s", "main"), r3.Commit.String()+" "+r1.Commit.String()+" homelab: second\n"+r1.Commit.String()+"  homelab: first\n"; got != want {
		t.Errorf("git log =\n%s\nwant\n%s", got, want)
	}
	if got := git(t, l.repo, nil, "diff", "--name-status", r1.Commit.String(), r3.Commit.String()); got != "D\tREADME.md\nA\tapps/new.yaml\n" {
		t.Errorf("diff between the commits = %q", got)
	}
}

// checkRepo compares main's files with the artifacts.
func checkRepo(t *testing.T, repo string, arts []render.Artifact) {
	t.Helper()
	var want []string
	for _, a := range arts {
		want = append(want, a.Path)
	}
	sort.Strings(want)
	got := strings.Fields(git(t, repo, nil, "ls-tree", "-r", "--name-only", "main"))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("git ls-tree -r main =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range strings.Split(strings.TrimSpace(git(t, repo, nil, "ls-tree", "-r", "main")), "\n") {
		if !strings.HasPrefix(line, "100644 blob ") {
			t.Errorf("ls-tree line %q: want a 100644 blob", line)
		}
	}
	for _, a := range arts {
		if got := git(t, repo, nil, "cat-file", "blob", "main:"+a.Path); got != string(a.Data) {
			t.Errorf("main:%s = %q, want %q", a.Path, got, a.Data)
		}
	}
}

// TestPushRemoteMoved: a hand-made commit on main stops Push unless
// Force, which builds on top of it.
func TestPushRemoteMoved(t *testing.T) {
	l := startServer(t)
	ctx := context.Background()
	st := memStore{}
	r1, err := Push(ctx, l.target(), arts1, Options{State: st})
	if err != nil {
		t.Fatal(err)
	}
	// Someone pushes by hand: a commit made with git in a clone.
	clone := filepath.Join(t.TempDir(), "clone")
	env := l.sshEnv(t, l.pushKey)
	git(t, filepath.Dir(clone), env, "clone", "--quiet", l.url(), clone)
	os.WriteFile(filepath.Join(clone, "hand.txt"), []byte("by hand\n"), 0o644)
	git(t, clone, env, "add", "hand.txt")
	git(t, clone, env, "commit", "--quiet", "-m", "by hand")
	git(t, clone, env, "push", "--quiet", "origin", "main")
	hand := strings.TrimSpace(git(t, clone, nil, "rev-parse", "HEAD"))

	_, err = Push(ctx, l.target(), arts1, Options{State: st})
	var moved *MovedError
	if !errors.As(err, &moved) || moved.Remote.String() != hand || moved.Last != r1.Commit {
		t.Fatalf("Push after a hand push = %v, want a MovedError naming %s and %s", err, hand, r1.Commit)
	}
	if !strings.Contains(err.Error(), "moved") {
		t.Errorf("error %q does not say the branch moved", err)
	}
	// Without state, any existing branch is "moved".
	if _, err := Push(ctx, l.target(), arts1, Options{}); !errors.As(err, &moved) || !moved.Last.IsZero() {
		t.Errorf("Push without state = %v, want a MovedError", err)
	}
	r, err := Push(ctx, l.target(), arts1, Options{State: st, Force: true})
	if err != nil {
		t.Fatalf("Push with Force: %v", err)
	}
	if r.Parent.String() != hand || !r.Pushed {
		t.Errorf("Push with Force = %+v, want a commit on top of %s", r, hand)
	}
	git(t, l.repo, nil, "fsck", "--strict", "--no-dangling")
	checkRepo(t, l.repo, arts1)
	// And now the state follows: the same tree is a no-op.
	if r, err := Push(ctx, l.target(), arts1, Options{State: st}); err != nil || r.Pushed {
		t.Errorf("Push after Force = %+v, %v; want nothing pushed", r, err)
	}
}

// TestPushEmptyAfterRecreate: the repository was made again (a local
// lab destroyed and applied): Push starts a new history.
func TestPushEmptyAfterRecreate(t *testing.T) {
	l := startServer(t)
	ctx := context.Background()
	st := memStore{}
	if _, err := Push(ctx, l.target(), arts1, Options{State: st}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(l.repo)
	if err := InitBare(ctx, "", l.dir, "lab.git"); err != nil {
		t.Fatal(err)
	}
	r, err := Push(ctx, l.target(), arts1, Options{State: st})
	if err != nil || !r.Pushed || !r.Parent.IsZero() {
		t.Fatalf("Push into a new empty repository = %+v, %v", r, err)
	}
	checkRepo(t, l.repo, arts1)
}

func TestPushRefusals(t *testing.T) {
	l := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	otherHost, otherHostPub := newKey(t, "other host")
	_ = otherHost
	stranger, _ := newKey(t, "stranger")
	for _, tc := range []struct {
		name string
		edit func(*Target)
		want string
	}{
		{"deploy key cannot push", func(tg *Target) { tg.PushKey = l.deployKey }, "may only run git-upload-pack"},
		{"unknown key", func(tg *Target) { tg.PushKey = stranger }, "unable to authenticate"},
		{"wrong host key", func(tg *Target) { tg.HostKey = otherHostPub }, "host key mismatch"},
		{"no such repository", func(tg *Target) { tg.Path = "/srv/git/other.git" }, `no repository "/srv/git/other.git" here`},
		{"bad host key", func(tg *Target) { tg.HostKey = "not a key" }, "not an SSH public key"},
		{"bad push key", func(tg *Target) { tg.PushKey = []byte("-----BEGIN nothing") }, "push key is not an OpenSSH private key"},
		{"quote in path", func(tg *Target) { tg.Path = "/srv/git/a'b.git" }, "has a quote"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := l.target()
			tc.edit(&tg)
			_, err := Push(ctx, tg, arts1, Options{State: memStore{}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Push = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if out, _ := gitErr(l.repo, nil, "rev-parse", "--verify", "--quiet", "main"); out != "" {
		t.Errorf("main exists after refused pushes: %s", out)
	}
}

func TestHead(t *testing.T) {
	l := startServer(t)
	ctx := context.Background()
	tg := l.target()
	tg.PushKey = l.deployKey
	if h, err := Head(ctx, tg); err != nil || !h.IsZero() {
		t.Fatalf("Head of an empty repository = %s, %v", h, err)
	}
	r, err := Push(ctx, l.target(), arts1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := Head(ctx, tg); err != nil || h != r.Commit {
		t.Errorf("Head = %s, %v; want %s", h, err, r.Commit)
	}
}

// TestPushBounded: a server that accepts and then says nothing does not
// hold Push past its context.
func TestPushBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	_, hostPub := newKey(t, "host")
	push, _ := newKey(t, "push")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Push(ctx, Target{Dial: (&net.Dialer{}).DialContext, Addr: ln.Addr().String(), Path: "/srv/git/lab.git", HostKey: hostPub, PushKey: push}, arts1, Options{})
	if err == nil {
		t.Fatal("Push to a silent server succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Push took %s against a silent server with a 500ms context", d)
	}
}

// failingStore fails the writes for which fail says so.
type failingStore struct {
	memStore
	fail func(name string, data []byte) bool
}

func (f failingStore) PutFile(name string, data []byte) error {
	if f.fail(name, data) {
		return errors.New("disk full")
	}
	return f.memStore.PutFile(name, data)
}

// TestPushCutShort: a push whose commit the server took, but which did
// not finish on homelab's side (context cancelled while the server runs
// its post-receive hook, or the state write after the push failing), is
// homelab's own the next time: no MovedError, and nothing pushed again
// for the same tree.
func TestPushCutShort(t *testing.T) {
	arts2 := append([]render.Artifact{{Path: "apps/new.yaml", Data: []byte("new: true\n")}}, arts1[1:]...)
	arts3 := append([]render.Artifact{{Path: "apps/third.yaml", Data: []byte("third: true\n")}}, arts1[1:]...)
	for _, tc := range []struct {
		name string
		// cut pushes arts2 and has the push end early after the server
		// updated the branch.
		cut func(t *testing.T, l *lab, st Store) error
	}{
		{"cancelled after the server took the pack", func(t *testing.T, l *lab, st Store) error {
			marker := filepath.Join(t.TempDir(), "received")
			hook := filepath.Join(l.repo, "hooks", "post-receive")
			// The hook runs after the branch is updated and the report
			// sent; it holds the session open until the test cancelled.
			script := "#!/bin/sh\ntouch '" + marker + "'\nsleep 1\n"
			if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(hook)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for ctx.Err() == nil {
					if _, err := os.Stat(marker); err == nil {
						cancel()
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			_, err := Push(ctx, l.target(), arts2, Options{State: st})
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled Push = %v, want context.Canceled", err)
			}
			return err
		}},
		{"state write after the push failed", func(t *testing.T, l *lab, st Store) error {
			fs := failingStore{memStore: st.(memStore), fail: func(name string, data []byte) bool {
				return name == StateFilePushed && !strings.Contains(string(data), `"pending"`)
			}}
			_, err := Push(context.Background(), l.target(), arts2, Options{State: fs})
			if err == nil || !strings.Contains(err.Error(), "recording it in the state folder failed") {
				t.Errorf("Push with a failing state write = %v", err)
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startServer(t)
			ctx := context.Background()
			st := memStore{}
			r1, err := Push(ctx, l.target(), arts1, Options{State: st})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.cut(t, l, st); err == nil {
				t.Fatal("the cut-short push reported success")
			}
			head := strings.TrimSpace(git(t, l.repo, nil, "rev-parse", "main"))
			if head == r1.Commit.String() {
				t.Fatalf("the server did not take the cut-short push (main is still %s)", head)
			}
			checkRepo(t, l.repo, arts2)

			r2, err := Push(ctx, l.target(), arts2, Options{State: st})
			if err != nil {
				t.Fatalf("Push after a cut-short push = %v, want the remote head known as homelab's", err)
			}
			if r2.Pushed || r2.Commit.String() != head {
				t.Errorf("Push of the same tree after a cut-short push = %+v, want nothing pushed at %s", r2, head)
			}
			last, err := loadPushed(st, "ssh://"+l.addr+"/srv/git/lab.git")
			if err != nil || last.commit.String() != head || !last.pending.commit.IsZero() {
				t.Errorf("state after = %+v, %v; want %s as the last push, nothing pending", last, err, head)
			}
			r3, err := Push(ctx, l.target(), arts3, Options{State: st})
			if err != nil || !r3.Pushed || r3.Parent.String() != head {
				t.Errorf("Push of a new tree = %+v, %v; want a commit on top of %s", r3, err, head)
			}
			git(t, l.repo, nil, "fsck", "--strict", "--no-dangling")
			checkRepo(t, l.repo, arts3)
		})
	}
}

// TestPushPendingThenChanged: the cut-short push's commit is the parent
// of the next push of another tree, without going through a no-op push.
func TestPushPendingThenChanged(t *testing.T) {
	l := startServer(t)
	ctx := context.Background()
	st := memStore{}
	fs := failingStore{memStore: st, fail: func(name string, data []byte) bool {
		return name == StateFilePushed && !strings.Contains(string(data), `"pending"`)
	}}
	if _, err := Push(ctx, l.target(), arts1, Options{State: fs}); err == nil {
		t.Fatal("Push with a failing state write succeeded")
	}
	head := strings.TrimSpace(git(t, l.repo, nil, "rev-parse", "main"))
	arts2 := append([]render.Artifact{{Path: "apps/new.yaml", Data: []byte("new: true\n")}}, arts1[1:]...)
	r, err := Push(ctx, l.target(), arts2, Options{State: st})
	if err != nil || !r.Pushed || r.Parent.String() != head {
		t.Fatalf("Push = %+v, %v; want a commit on top of the pending %s", r, err, head)
	}
	// A stale pending record (a push that never reached the server)
	// leaves the last push as it was.
	st[StateFilePushed] = []byte(`{"repository":"ssh://` + l.addr + `/srv/git/lab.git","commit":"` + r.Commit.String() + `","tree":"` + r.Tree.String() + `","pending":{"commit":"` + strings.Repeat("ab", 20) + `","tree":"` + r.Tree.String() + `","parent":"` + r.Commit.String() + `"}}`)
	if r2, err := Push(ctx, l.target(), arts2, Options{State: st}); err != nil || r2.Pushed {
		t.Errorf("Push with a stale pending record = %+v, %v; want nothing pushed", r2, err)
	}
	if _, err := Push(ctx, l.target(), arts2, Options{State: memStore{StateFilePushed: []byte(`{"repository":"ssh://` + l.addr + `/srv/git/lab.git","pending":{"commit":"` + strings.Repeat("ab", 20) + `"}}`)}}); err == nil || !strings.Contains(err.Error(), "not what homelab wrote") {
		t.Errorf("Push with a broken pending record = %v", err)
	}
}

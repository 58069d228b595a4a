package local_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/apply"
	"github.com/homelab-dev/homelab/internal/gitrepo"
	"github.com/homelab-dev/homelab/internal/provider/local/ns"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/verify"
)

func sshKey(t *testing.T, comment string) ([]byte, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return pem.EncodeToMemory(b), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

// TestGitServerInLab builds the reference lab with the manager's git
// server, pushes through the VPN (from the VPN client's namespace, as an
// operator would through homelab's tunnel), reads the repository with
// git, and checks that the internet cannot reach it, that verify's
// policy holds with it running, and that destroy removes it with its
// host key.
func TestGitServerInLab(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs the git binary (apt-get install git): the local git server runs it")
	}
	tl := newTestLab(t)
	ctx := context.Background()
	topo := tl.p.Topology()

	store, err := secrets.OpenWithIdentity(tl.stateDir, filepath.Join(tl.dir, "identity.txt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, err := store.LoadOrCreate(tl.lab)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, hostPub := sshKey(t, "manager host key")
	deployKey, deployPub := sshKey(t, "flux deploy key")
	push, _, err := gitrepo.LoadOrCreatePushKey(store)
	if err != nil {
		t.Fatal(err)
	}
	arts, err := render.Render(tl.lab, bundle, render.WithGitServer(render.GitServer{
		HostKey: hostKey, HostPublic: hostPub, PushPublic: push.Public, DeployPublic: deployPub}))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tl.p.Converge(ctx, arts, apply.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	mgr, _ := topo.Guest(spec.MachineManager, 0)
	admin, _ := mgr.Machine.Address(spec.RoleAdmin)
	url := "ssh://git@" + admin.String() + render.GitRepoPath(tl.lab)
	viaVPN := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ns.Dial(ctx, topo.ClientNS, network, addr)
	}
	// As the reference lab's test does: the first packets through a
	// fresh WireGuard client may be lost while it shakes hands.
	c, err := dialRetry(topo.ClientNS, netip.AddrPortFrom(admin, 22).String(), 5)
	if err != nil {
		t.Fatalf("from %s to the manager's ssh through the VPN: %v", topo.ClientNS, err)
	}
	c.Close()
	target, err := gitrepo.TargetFromURL(url, viaVPN, hostPub, push.Key)
	if err != nil {
		t.Fatal(err)
	}
	tree := []render.Artifact{
		{Path: "README.md", Data: []byte("# " + tl.lab.Name + "\n")},
		{Path: "clusters/" + tl.lab.Name + "/apps.yaml", Data: []byte("kind: Kustomization\n")},
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := gitrepo.Push(pctx, target, tree, gitrepo.Options{Message: "homelab: test", State: store})
	if err != nil {
		t.Fatalf("push through the VPN: %v", err)
	}
	if !res.Pushed {
		t.Errorf("first push pushed nothing")
	}
	repo := filepath.Join(tl.stateDir, "local", "config", mgr.NS, "git", tl.lab.Name+".git")
	out, err := exec.Command("git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "main").CombinedOutput()
	if err != nil || string(out) != "README.md\nclusters/"+tl.lab.Name+"/apps.yaml\n" {
		t.Errorf("git ls-tree in the manager's repository: %v\n%s", err, out)
	}
	if out, err := exec.Command("git", "--git-dir", repo, "fsck", "--strict").CombinedOutput(); err != nil {
		t.Errorf("git fsck: %v\n%s", err, out)
	}
	if res2, err := gitrepo.Push(pctx, target, tree, gitrepo.Options{State: store}); err != nil || res2.Pushed {
		t.Errorf("second push of the same tree = %+v, %v; want nothing pushed", res2, err)
	}

	// Flux's deploy key reads, and may not push.
	read := target
	read.PushKey = deployKey
	if h, err := gitrepo.Head(pctx, read); err != nil || h != res.Commit {
		t.Errorf("head read with the deploy key = %s, %v; want %s", h, err, res.Commit)
	}
	if _, err := gitrepo.Push(pctx, read, append(tree, render.Artifact{Path: "x", Data: []byte("x")}), gitrepo.Options{State: store}); err == nil || !strings.Contains(err.Error(), "may only run git-upload-pack") {
		t.Errorf("push with the deploy key = %v, want a refusal", err)
	}

	// The internet does not reach the manager's SSH.
	if c, err := dialRetry(topo.InternetNS, netip.AddrPortFrom(admin, 22).String(), 1); err == nil {
		c.Close()
		t.Errorf("from %s to the manager's ssh: connected, want filtered", topo.InternetNS)
	}

	// verify's probe of the manager's SSH now meets the git server: the
	// policy still holds.
	if rep, err := verify.Run(ctx, tl.lab, verify.Options{}); err != nil {
		var b strings.Builder
		if rep != nil {
			rep.Print(&b)
		}
		t.Errorf("verify with the git server running: %v\n%s", err, b.String())
	}

	if _, _, err := tl.p.Teardown(ctx, apply.Options{}); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if left := tl.leftovers(t); len(left) > 0 {
		t.Errorf("destroy left:\n%s", strings.Join(left, "\n"))
	}
}

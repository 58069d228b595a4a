package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/gitops"
	"github.com/homelab-dev/homelab/internal/gitrepo"
	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

func TestGitserverFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"gitserver", "run", "--dir", dir}, "pass --dir, --listen, --host-key and --authorized"},
		{[]string{"gitserver", "run", "--dir", dir, "--listen", "127.0.0.1:0", "--host-key", "/nonexistent", "--authorized", "/nonexistent"}, "reading the host key"},
	} {
		code, _, stderr := runCLI(t, tt.args...)
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("homelab %s = %d %q, want an error containing %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
}

func cliSSHKey(t *testing.T, comment string) ([]byte, string) {
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

// TestGitserverRun runs the command as the local provider does, pushes
// to it, and stops it with its context.
func TestGitserverRun(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (apt-get install git)")
	}
	dir := t.TempDir()
	hostKey, hostPub := cliSSHKey(t, "host")
	pushKey, pushPub := cliSSHKey(t, "push")
	_, deployPub := cliSSHKey(t, "deploy")
	auth, err := render.GitAuthorizedKeys("/srv/git/lab.git", pushPub, deployPub)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "host"), hostKey, 0o600)
	os.WriteFile(filepath.Join(dir, "auth"), []byte(auth), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var stderr bytes.Buffer
	go func() {
		done <- Run(ctx, []string{"gitserver", "run", "--dir", filepath.Join(dir, "git"), "--listen", addr,
			"--host-key", filepath.Join(dir, "host"), "--authorized", filepath.Join(dir, "auth"), "--repo", "lab"}, &bytes.Buffer{}, &stderr)
	}()
	target := gitrepo.Target{Dial: (&net.Dialer{}).DialContext, Addr: addr, Path: "/srv/git/lab.git", HostKey: hostPub, PushKey: pushKey}
	var res gitrepo.Result
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err = gitrepo.Push(ctx, target, []render.Artifact{{Path: "a", Data: []byte("a\n")}}, gitrepo.Options{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !res.Pushed {
		t.Fatalf("push to homelab gitserver run: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "git", "lab.git", "HEAD")); err != nil {
		t.Errorf("--repo lab made no bare repository: %v", err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("gitserver run exited %d after its context ended: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gitserver run did not stop with its context")
	}
}

type cliMemStore map[string][]byte

func (m cliMemStore) PutFile(name string, data []byte) error { m[name] = bytes.Clone(data); return nil }
func (m cliMemStore) GetFile(name string) ([]byte, error) {
	d, ok := m[name]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return d, nil
}

func TestGitServerOptions(t *testing.T) {
	st := cliMemStore{}
	lab := &spec.Lab{Name: "lab"}
	opts, err := gitServerOptions(lab, st)
	if err != nil || len(opts) != 1 {
		t.Fatalf("gitServerOptions = %d options, %v; want 1", len(opts), err)
	}
	if _, ok := st[gitops.StateFileGitAccess]; !ok {
		t.Errorf("the git access keys were not stored")
	}
	if _, ok := st[gitrepo.StateFilePushKey]; !ok {
		t.Errorf("the push key was not stored")
	}
	lab.GitOps.Repository = "ssh://git@example.com/lab.git"
	if opts, err := gitServerOptions(lab, cliMemStore{}); err != nil || len(opts) != 0 {
		t.Errorf("with gitops.repository: %d options, %v; want none", len(opts), err)
	}
}

package gitrepo

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/render"
)

// The test binary doubles as the ssh client git runs (GIT_SSH_COMMAND),
// so that tests drive the server with the real git client without
// OpenSSH installed.
const sshHelperEnv = "GITREPO_TEST_SSH_KEY"

func TestMain(m *testing.M) {
	if os.Getenv(sshHelperEnv) != "" {
		os.Exit(sshHelper(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// sshHelper is a minimal "ssh [-o opt] [-p port] user@host command".
func sshHelper(args []string) int {
	port := "22"
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-p", "-o":
			if args[0] == "-p" {
				port = args[1]
			}
			args = args[2:]
		default:
			args = args[1:]
		}
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "ssh helper: want user@host command")
		return 255
	}
	user, host, _ := strings.Cut(args[0], "@")
	key, err := os.ReadFile(os.Getenv(sshHelperEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssh helper:", err)
		return 255
	}
	t := Target{Dial: (&net.Dialer{}).DialContext, Addr: net.JoinHostPort(host, port), User: user,
		HostKey: os.Getenv("GITREPO_TEST_SSH_HOSTKEY"), PushKey: key}
	c, err := dialSSH(context.Background(), t)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssh helper:", err)
		return 255
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssh helper:", err)
		return 255
	}
	if v := os.Getenv("GIT_PROTOCOL"); v != "" {
		sess.Setenv("GIT_PROTOCOL", v)
	}
	sess.Stdin, sess.Stdout, sess.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = sess.Run(strings.Join(args[1:], " "))
	var exit *ssh.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitStatus()
	default:
		fmt.Fprintln(os.Stderr, "ssh helper:", err)
		return 255
	}
}

// newKey makes an ed25519 key: OpenSSH PEM and authorized_keys line.
func newKey(t testing.TB, comment string) ([]byte, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

// memStore is an in-memory Store.
type memStore map[string][]byte

func (m memStore) PutFile(name string, data []byte) error { m[name] = bytes.Clone(data); return nil }
func (m memStore) GetFile(name string) ([]byte, error) {
	d, ok := m[name]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return bytes.Clone(d), nil
}

func needGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("these tests need the git binary in PATH (apt-get install git)")
	}
}

// git runs git with a clean environment and returns its stdout.
func git(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	out, err := gitErr(dir, env, args...)
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func gitErr(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t"}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

// lab is a running git server with a bare repository and its keys.
type lab struct {
	dir, repo          string
	addr               string
	hostPub            string
	pushKey, deployKey []byte
	pushPub            string
	srv                *Server
	log                *syncBuffer
}

type syncBuffer struct {
	limitedWriter
}

// startServer starts a Server on a fresh repository; edit, if any, sets
// its limits before it serves.
func startServer(t *testing.T, edit ...func(*Server)) *lab {
	t.Helper()
	needGit(t)
	l := &lab{dir: t.TempDir(), log: &syncBuffer{limitedWriter{n: 1 << 20}}}
	hostKey, hostPub := newKey(t, "manager host key")
	var deployPub string
	l.pushKey, l.pushPub = newKey(t, "push")
	l.deployKey, deployPub = newKey(t, "deploy")
	l.hostPub = hostPub
	auth, err := render.GitAuthorizedKeys("/srv/git/lab.git", l.pushPub, deployPub)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitBare(context.Background(), "", l.dir, "lab"); err != nil {
		t.Fatal(err)
	}
	l.repo = filepath.Join(l.dir, "lab.git")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	l.srv = &Server{Dir: l.dir, HostKey: hostKey, Authorized: []byte(auth), Log: l.log}
	for _, e := range edit {
		e(l.srv)
	}
	done := make(chan error, 1)
	go func() { done <- l.srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		l.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l
}

func (l *lab) target() Target {
	return Target{Dial: (&net.Dialer{}).DialContext, Addr: l.addr, Path: "/srv/git/lab.git", HostKey: l.hostPub, PushKey: l.pushKey}
}

// sshEnv makes git use the test binary as ssh, with key.
func (l *lab) sshEnv(t *testing.T, key []byte) []string {
	t.Helper()
	kf := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(kf, key, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"GIT_SSH_COMMAND=" + exe, "GIT_SSH_VARIANT=ssh", sshHelperEnv + "=" + kf, "GITREPO_TEST_SSH_HOSTKEY=" + l.hostPub}
}

func (l *lab) url() string {
	_, port, _ := net.SplitHostPort(l.addr)
	return "ssh://git@127.0.0.1:" + port + "/srv/git/lab.git"
}

var _ io.Writer = (*syncBuffer)(nil)

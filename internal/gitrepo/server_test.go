package gitrepo

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/render"
)

// TestServerWithGitClient drives the server with the real git client
// (through the test binary as its ssh).
func TestServerWithGitClient(t *testing.T) {
	l := startServer(t)
	push, deploy := l.sshEnv(t, l.pushKey), l.sshEnv(t, l.deployKey)
	work := t.TempDir()

	// Push with the push key, from a fresh repository.
	src := filepath.Join(work, "src")
	git(t, work, nil, "init", "--quiet", "--initial-branch=main", src)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	git(t, src, nil, "add", "a.txt")
	git(t, src, nil, "commit", "--quiet", "-m", "first")
	git(t, src, push, "push", "--quiet", l.url(), "main")
	want := strings.TrimSpace(git(t, src, nil, "rev-parse", "HEAD"))
	if got := strings.TrimSpace(git(t, l.repo, nil, "rev-parse", "main")); got != want {
		t.Errorf("server's main = %s, pushed %s", got, want)
	}

	// Clone with the deploy key, in protocol v0 and v2.
	for _, proto := range []string{"0", "2"} {
		dst := filepath.Join(work, "clone-v"+proto)
		git(t, work, deploy, "-c", "protocol.version="+proto, "clone", "--quiet", l.url(), dst)
		if got := strings.TrimSpace(git(t, dst, nil, "rev-parse", "HEAD")); got != want {
			t.Errorf("protocol v%s clone at %s, want %s", proto, got, want)
		}
	}
	if !strings.Contains(l.log.String(), "git upload-pack") {
		t.Errorf("the server log does not show the fetch:\n%s", l.log.String())
	}

	// The deploy key cannot push.
	os.WriteFile(filepath.Join(src, "b.txt"), []byte("b\n"), 0o644)
	git(t, src, nil, "add", "b.txt")
	git(t, src, nil, "commit", "--quiet", "-m", "second")
	_, err := gitErr(src, deploy, "push", "--quiet", l.url(), "main")
	if err == nil || !strings.Contains(err.Error(), "this key may only run git-upload-pack") {
		t.Errorf("push with the deploy key: %v, want a refusal saying it may only fetch", err)
	}
	if got := strings.TrimSpace(git(t, l.repo, nil, "rev-parse", "main")); got != want {
		t.Errorf("server's main moved to %s after a refused push", got)
	}
	// An unknown repository.
	_, err = gitErr(work, push, "clone", "--quiet", strings.Replace(l.url(), "lab.git", "nope.git", 1), filepath.Join(work, "nope"))
	if err == nil || !strings.Contains(err.Error(), "no repository") {
		t.Errorf("clone of an unknown repository: %v, want 'no repository'", err)
	}
}

// TestServerRefuses checks what is not a git command, with our own client.
func TestServerRefuses(t *testing.T) {
	l := startServer(t)
	c, err := dialSSH(context.Background(), l.target())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct{ cmd, want string }{
		{"ls /", "only git-upload-pack and git-receive-pack are served here"},
		{"git-upload-pack '/srv/git/../../etc.git'", "no repository"},
		{"git-upload-pack '/srv/git/x'; rm -rf /", "not quoted as git quotes it"},
		{"git-upload-archive '/srv/git/lab.git'", "only git-upload-pack"},
		{"git-receive-pack '/etc'", "no repository"},
	} {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var stderr limitedWriter
		stderr.n = 4096
		sess.Stderr = &stderr
		err = sess.Run(tc.cmd)
		var exit *ssh.ExitError
		if !errors.As(err, &exit) || exit.ExitStatus() != 128 {
			t.Errorf("%q: %v, want exit status 128", tc.cmd, err)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.cmd, stderr.String(), tc.want)
		}
	}
	// An interactive shell and a pty are refused.
	sess, _ := c.NewSession()
	if err := sess.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Errorf("pty request accepted")
	}
	var stderr limitedWriter
	stderr.n = 4096
	sess.Stderr = &stderr
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	if err := sess.Wait(); err == nil || !strings.Contains(stderr.String(), "no interactive shell") {
		t.Errorf("shell: %v, stderr %q", err, stderr.String())
	}
	// Port forwarding is refused.
	if _, err := c.Dial("tcp", "127.0.0.1:22"); err == nil {
		t.Errorf("port forwarding accepted")
	}
}

func TestServerConfigErrors(t *testing.T) {
	hostKey, _ := newKey(t, "host")
	_, pub := newKey(t, "k")
	for _, tc := range []struct {
		name       string
		host, auth string
		want       string
	}{
		{"no host key", "", pub, "host key"},
		{"no keys", string(hostKey), "\n", "no key"},
		{"unknown option", string(hostKey), `from="10.0.0.1" ` + pub, "option"},
		{"forced shell", string(hostKey), `command="/bin/sh" ` + pub, "forced command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{Dir: t.TempDir(), HostKey: []byte(tc.host), Authorized: []byte(tc.auth)}
			err = s.Serve(context.Background(), ln)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Serve = %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
}

func TestServerCloseAndContext(t *testing.T) {
	hostKey, _ := newKey(t, "host")
	_, pub := newKey(t, "k")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Dir: t.TempDir(), Listen: "127.0.0.1:0", HostKey: hostKey, Authorized: []byte(pub)}
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	s2 := &Server{}
	s2.Close()
	if err := s2.Run(context.Background()); err == nil {
		t.Errorf("Run after Close = nil, want an error")
	}
}

func TestParseGitCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd, verb, path string
		ok              bool
	}{
		{"git-upload-pack '/srv/git/lab.git'", "upload-pack", "/srv/git/lab.git", true},
		{"git-receive-pack '/srv/git/lab.git'", "receive-pack", "/srv/git/lab.git", true},
		{"git upload-pack '/srv/git/lab.git'", "upload-pack", "/srv/git/lab.git", true},
		{"git-upload-pack 'lab.git'", "upload-pack", "lab.git", true},
		{"git-upload-pack lab.git", "upload-pack", "lab.git", true},
		{`git-upload-pack 'a'\''b.git'`, "upload-pack", "a'b.git", true},
		{`git-upload-pack 'a'\!'b'`, "upload-pack", "a!b", true},
		{"git-upload-pack 'a", "", "", false},
		{"git-upload-pack 'a'b", "", "", false},
		{"git-upload-pack a b", "", "", false},
		{"git-upload-pack $(id)", "", "", false},
		{"git-upload-archive 'a'", "", "", false},
		{"sh -c id", "", "", false},
	} {
		verb, path, err := parseGitCommand(tc.cmd)
		if (err == nil) != tc.ok || verb != tc.verb || path != tc.path {
			t.Errorf("parseGitCommand(%q) = %q, %q, %v; want %q, %q, ok %v", tc.cmd, verb, path, err, tc.verb, tc.path, tc.ok)
		}
	}
}

func TestRepoDir(t *testing.T) {
	dir := t.TempDir()
	if err := InitBare(context.Background(), "", dir, "lab"); err != nil {
		t.Fatal(err)
	}
	if err := InitBare(context.Background(), "", dir, "lab"); err != nil {
		t.Errorf("InitBare of an existing repository: %v", err)
	}
	if got := strings.TrimSpace(git(t, filepath.Join(dir, "lab.git"), nil, "symbolic-ref", "HEAD")); got != "refs/heads/main" {
		t.Errorf("HEAD = %s, want refs/heads/main", got)
	}
	if err := InitBare(context.Background(), "", dir, "../x"); err == nil {
		t.Errorf("InitBare(../x) = nil, want an error")
	}
	s := &Server{Dir: dir}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/srv/git/lab.git", true}, {"lab.git", true}, {"/lab.git", true}, {"/srv/git/lab", true}, {"/srv/git/lab.git/", true},
		{"/srv/git/other.git", false}, {"/srv/git/../lab.git", false}, {"/srv/git/x/lab.git", false}, {"..", false}, {"", false},
	} {
		got, err := s.repoDir(tc.path)
		if (err == nil) != tc.ok || (tc.ok && got != filepath.Join(dir, "lab.git")) {
			t.Errorf("repoDir(%q) = %q, %v; want ok %v", tc.path, got, err, tc.ok)
		}
	}
}

// TestParseAuthorized: the server reads render's authorized_keys as sshd
// with git-shell would.
func TestParseAuthorized(t *testing.T) {
	_, push := newKey(t, "push")
	_, deploy := newKey(t, "deploy")
	a, err := render.GitAuthorizedKeys("/srv/git/lab.git", push, deploy)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(a), "\n")
	if len(lines) != 2 || lines[0] != "restrict "+push || lines[1] != `restrict,command="git-upload-pack '/srv/git/lab.git'" `+deploy {
		t.Errorf("AuthorizedKeys =\n%s", a)
	}
	g, err := parseAuthorized([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(push))
	dk, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(deploy))
	if g[string(pk.Marshal())].forced != "" || g[string(dk.Marshal())].forced != "git-upload-pack '/srv/git/lab.git'" {
		t.Errorf("parseAuthorized = %+v", g)
	}
}

func TestLoadOrCreatePushKey(t *testing.T) {
	st := memStore{}
	k, created, err := LoadOrCreatePushKey(st)
	if err != nil || !created {
		t.Fatalf("LoadOrCreatePushKey = %v, %v", created, err)
	}
	signer, err := ssh.ParsePrivateKey(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " homelab push key"; got != k.Public {
		t.Errorf("Public = %q, want %q", k.Public, got)
	}
	k2, created, err := LoadOrCreatePushKey(st)
	if err != nil || created || string(k2.Key) != string(k.Key) {
		t.Errorf("second LoadOrCreatePushKey: created %v, %v, same key %v", created, err, string(k2.Key) == string(k.Key))
	}
	if _, _, err := LoadOrCreatePushKey(memStore{StateFilePushKey: []byte("{")}); err == nil || strings.Contains(err.Error(), "{") {
		t.Errorf("LoadOrCreatePushKey of a broken file = %v", err)
	}
}

func TestTargetFromURL(t *testing.T) {
	for _, tc := range []struct {
		url, addr, user, path string
		ok                    bool
	}{
		{"ssh://git@10.10.1.5/srv/git/lab.git", "10.10.1.5:22", "git", "/srv/git/lab.git", true},
		{"ssh://10.10.1.5:2222/srv/git/lab.git", "10.10.1.5:2222", "git", "/srv/git/lab.git", true},
		{"ssh://git@[fd00::5]/srv/git/lab.git", "[fd00::5]:22", "git", "/srv/git/lab.git", true},
		{"https://example.com/lab.git", "", "", "", false},
		{"ssh://git@host", "", "", "", false},
	} {
		tg, err := TargetFromURL(tc.url, nil, "h", nil)
		if (err == nil) != tc.ok || tg.Addr != tc.addr || tg.User != tc.user || tg.Path != tc.path {
			t.Errorf("TargetFromURL(%q) = %+v, %v", tc.url, tg, err)
		}
	}
}

// FuzzParseGitCommand: the command a client asks for is outside input.
// Parsing must not panic, and no accepted path may leave Dir.
func FuzzParseGitCommand(f *testing.F) {
	for _, s := range []string{"git-upload-pack '/srv/git/lab.git'", `git-receive-pack 'a'\''b'`, "git upload-pack lab.git", "git-upload-pack '/srv/git/../x.git'"} {
		f.Add(s)
	}
	dir := f.TempDir()
	srv := &Server{Dir: dir}
	f.Fuzz(func(t *testing.T, cmd string) {
		verb, path, err := parseGitCommand(cmd)
		if err != nil {
			return
		}
		if verb != "upload-pack" && verb != "receive-pack" {
			t.Fatalf("parseGitCommand(%q) verb %q", cmd, verb)
		}
		// No repository exists in dir, so any accepted path is a bug;
		// the name check runs before the existence check.
		if got, err := srv.repoDir(path); err == nil {
			t.Fatalf("repoDir(%q) = %q in an empty folder", path, got)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(path, "/srv/git/"), "/")
		if repoName.MatchString(strings.TrimSuffix(name, "/")) {
			p := filepath.Join(dir, strings.TrimSuffix(name, "/"))
			if filepath.Dir(p) != dir {
				t.Fatalf("path %q maps outside %s: %s", path, dir, p)
			}
		}
	})
}

func TestNewSSHKey(t *testing.T) {
	priv, pub, err := NewSSHKey("some key")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type %s, want ed25519", signer.PublicKey().Type())
	}
	if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " some key"; pub != want {
		t.Errorf("public = %q, want %q", pub, want)
	}
	priv2, _, _ := NewSSHKey("some key")
	if string(priv2) == string(priv) {
		t.Error("two keys are the same")
	}
}

// closingListener hands out one connection, calling close just before
// it returns it (Close racing Accept), then reports itself closed.
type closingListener struct {
	conn   net.Conn
	close  func()
	closed chan struct{}
	once   sync.Once
}

func (l *closingListener) Accept() (net.Conn, error) {
	if c := l.conn; c != nil {
		l.conn = nil
		l.close()
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *closingListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *closingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestServerCloseRacingAccept: a connection accepted while Close runs
// is closed at once; Serve does not wait for its handshake timeout.
func TestServerCloseRacingAccept(t *testing.T) {
	hostKey, _ := newKey(t, "host")
	_, pub := newKey(t, "k")
	s := &Server{Dir: t.TempDir(), HostKey: hostKey, Authorized: []byte(pub)}
	client, server := net.Pipe()
	defer client.Close()
	ln := &closingListener{conn: server, close: func() { s.Close() }, closed: make(chan struct{})}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Serve(context.Background(), ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil after Close", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still waits 5s after Close: the connection accepted during Close was kept")
	}
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := client.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection accepted during Close: read = %v, want it closed", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
}

// TestServerConnTimeLimit: a connection that outstays MaxConnTime is
// closed and its git command ended, whether it idles after the
// handshake or leaves git waiting for input; the server serves on.
func TestServerConnTimeLimit(t *testing.T) {
	const limit = 700 * time.Millisecond
	l := startServer(t, func(s *Server) { s.MaxConnTime = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		// hold uses the connection and returns a channel closed when
		// the server ended it.
		hold func(t *testing.T, c *ssh.Client) <-chan struct{}
	}{
		{"idle after the handshake", func(t *testing.T, c *ssh.Client) <-chan struct{} {
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			return done
		}},
		{"git waiting for the client", func(t *testing.T, c *ssh.Client) <-chan struct{} {
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			stdin, _ := sess.StdinPipe()
			_ = stdin // left open: receive-pack waits for commands
			stdout, _ := sess.StdoutPipe()
			if err := sess.Start("git-receive-pack '/srv/git/lab.git'"); err != nil {
				t.Fatal(err)
			}
			if _, err := ParseAdvertisement(bufio.NewReader(stdout)); err != nil {
				t.Fatalf("reading the advertisement: %v", err)
			}
			done := make(chan struct{})
			go func() { sess.Wait(); close(done) }()
			return done
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialSSH(ctx, l.target())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			select {
			case <-tc.hold(t, c):
				if d := time.Since(start); d < limit/2 {
					t.Errorf("the connection ended after %s, before the limit %s", d, limit)
				}
			case <-time.After(limit + 5*time.Second):
				t.Fatalf("the connection is still open %s after its limit", 5*time.Second)
			}
		})
	}
	if !strings.Contains(l.log.String(), "the limit of a connection") {
		t.Errorf("the log does not say a connection met its limit:\n%s", l.log.String())
	}
	if _, err := Push(ctx, l.target(), arts1, Options{}); err != nil {
		t.Errorf("Push after connections were cut off: %v", err)
	}
}

// TestServerMaxConns: connections past MaxConns are closed at once;
// when one ends, a new one is served.
func TestServerMaxConns(t *testing.T) {
	l := startServer(t, func(s *Server) { s.MaxConns = 1 })
	banner := func(c net.Conn) (string, error) {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		return bufio.NewReader(c).ReadString('\n')
	}
	c1, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := banner(c1); err != nil || !strings.HasPrefix(b, "SSH-2.0-homelab-gitserver") {
		t.Fatalf("first connection: banner %q, %v", b, err)
	}
	c2, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if b, err := banner(c2); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("second connection past MaxConns=1: banner %q, %v; want it closed", b, err)
	}
	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c3, err := net.Dial("tcp", l.addr)
		if err != nil {
			t.Fatal(err)
		}
		b, err := banner(c3)
		c3.Close()
		if err == nil && strings.HasPrefix(b, "SSH-2.0-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after the first one ended: %q, %v", b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(l.log.String(), "1 connections already") {
		t.Errorf("the log does not say a connection was refused:\n%s", l.log.String())
	}
}

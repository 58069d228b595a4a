package gitrepo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultPrefix is where repositories live on the manager VM; the
// server maps <prefix>/<name>.git to <Dir>/<name>.git.
const DefaultPrefix = "/srv/git"

// Server serves the bare repositories of a folder over SSH, as the
// manager VM does with sshd and git-shell: it accepts only the keys of
// an authorized_keys file, runs only git-upload-pack (fetch) and
// git-receive-pack (push) with the system's git, and refuses the rest
// with a message. A key with a command="git-upload-pack '<repo>'" option
// may only fetch that repository; a key without one may fetch and push.
type Server struct {
	// Dir holds the bare repositories, <name>.git.
	Dir string
	// Prefix is the folder clients name in their paths (default
	// DefaultPrefix); paths relative to it, or bare <name>.git, work too.
	Prefix string
	// Listen is the TCP address Run listens on.
	Listen string
	// HostKey is the server's private host key (OpenSSH PEM).
	HostKey []byte
	// Authorized is the authorized_keys content (render.GitAuthorizedKeys).
	Authorized []byte
	// Git is the git binary (default "git" from PATH).
	Git string
	// Log receives one line per connection and command (default: none).
	Log io.Writer
	// MaxConnTime bounds a connection from its accept to its end
	// (default DefaultMaxConnTime): past it the connection is closed and
	// its git command ended, whatever the client still does.
	MaxConnTime time.Duration
	// MaxConns caps the connections served at once (default
	// DefaultMaxConns); more are closed as they are accepted.
	MaxConns int

	mu     sync.Mutex
	ln     net.Listener
	cancel context.CancelFunc
	closed bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

// handshakeTimeout bounds how long a client may take to authenticate.
const handshakeTimeout = 30 * time.Second

// Defaults of Server.MaxConnTime and Server.MaxConns: a push or a fetch
// of the lab's repository takes seconds, and its clients are homelab and
// Flux.
const (
	DefaultMaxConnTime = 10 * time.Minute
	DefaultMaxConns    = 32
)

// stdinGrace is how long a session waits, once its git command ended,
// for the client to close its side; then the connection is closed.
const stdinGrace = 5 * time.Second

// pipeGrace is how long a git command's output may stay open after it
// exits or is killed (a hook's child holding it).
const pipeGrace = 5 * time.Second

// grant is what a key may do, from its authorized_keys options.
type grant struct {
	// forced is the command= option, empty when the key may run
	// upload-pack and receive-pack.
	forced string
}

// ParseAuthorized reads an authorized_keys file: each key with what it
// may run. Options other than restrict, no-* and command= are refused.
func parseAuthorized(data []byte) (map[string]grant, error) {
	out := map[string]grant{}
	rest := data
	for len(bytes.TrimSpace(rest)) > 0 {
		pub, _, opts, r, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return nil, fmt.Errorf("reading the authorized keys: %w", err)
		}
		rest = r
		var g grant
		for _, o := range opts {
			switch {
			case o == "restrict" || strings.HasPrefix(o, "no-"):
			case strings.HasPrefix(o, `command="`) && strings.HasSuffix(o, `"`):
				g.forced = strings.TrimSuffix(strings.TrimPrefix(o, `command="`), `"`)
				if _, _, err := parseGitCommand(g.forced); err != nil {
					return nil, fmt.Errorf("reading the authorized keys: forced command: %w", err)
				}
			default:
				return nil, fmt.Errorf("reading the authorized keys: option %q is not one this server knows", o)
			}
		}
		out[string(pub.Marshal())] = g
	}
	if len(out) == 0 {
		return nil, errors.New("reading the authorized keys: no key")
	}
	return out, nil
}

var gitVerb = regexp.MustCompile(`^git[ -](upload-pack|receive-pack) (.+)$`)

// parseGitCommand reads "git-upload-pack '<path>'" (or receive-pack,
// or "git upload-pack"), unquoting the path as git quotes it.
func parseGitCommand(cmd string) (verb, path string, err error) {
	m := gitVerb.FindStringSubmatch(cmd)
	if m == nil {
		return "", "", fmt.Errorf("only git-upload-pack and git-receive-pack are served here, not %q", sanitize(cmd))
	}
	path, err = unquote(m[2])
	if err != nil {
		return "", "", err
	}
	return m[1], path, nil
}

// unquote undoes git's sq_quote: 'a'\”b' is a'b; a plain word is taken
// as it is.
func unquote(s string) (string, error) {
	if !strings.HasPrefix(s, "'") {
		if strings.ContainsAny(s, " '\"\\$`") {
			return "", fmt.Errorf("path %q is not quoted as git quotes it", sanitize(s))
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '\'' {
			return "", fmt.Errorf("path %q is not quoted as git quotes it", sanitize(s))
		}
		end := strings.IndexByte(s[i+1:], '\'')
		if end < 0 {
			return "", fmt.Errorf("path %q has an unterminated quote", sanitize(s))
		}
		b.WriteString(s[i+1 : i+1+end])
		i += end + 2
		switch {
		case i == len(s):
		case strings.HasPrefix(s[i:], `\'`), strings.HasPrefix(s[i:], `\!`):
			b.WriteByte(s[i+1])
			i += 2
		default:
			return "", fmt.Errorf("path %q is not quoted as git quotes it", sanitize(s))
		}
	}
	return b.String(), nil
}

var repoName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*\.git$`)

var gitProtocol = regexp.MustCompile(`^version=[0-9]$`)

// repoDir maps a client's path to a repository folder under Dir.
func (s *Server) repoDir(p string) (string, error) {
	prefix := s.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	name := strings.TrimPrefix(strings.TrimPrefix(p, strings.TrimSuffix(prefix, "/")+"/"), "/")
	name = strings.TrimSuffix(name, "/")
	if !strings.HasSuffix(name, ".git") {
		name += ".git"
	}
	if !repoName.MatchString(name) || strings.Contains(name, "..") {
		return "", fmt.Errorf("no repository %q here", sanitize(p))
	}
	dir := filepath.Join(s.Dir, name)
	if fi, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("no repository %q here", sanitize(p))
	}
	return dir, nil
}

// InitBare creates the bare repository <dir>/<name>.git with main as its
// initial branch, unless it exists. dir is created if its parent exists.
func InitBare(ctx context.Context, git, dir, name string) error {
	if git == "" {
		git = "git"
	}
	if !strings.HasSuffix(name, ".git") {
		name += ".git"
	}
	if !repoName.MatchString(name) {
		return fmt.Errorf("creating the repository: %q is not a plain repository name", name)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(filepath.Join(p, "HEAD")); err == nil {
		return nil
	}
	// Mkdir, not MkdirAll: dir's parent must exist. The local provider
	// removes a daemon's config folder (the parent) on destroy, and a
	// server restarted in that moment must not make it again.
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating the repository: %w", err)
	}
	out, err := exec.CommandContext(ctx, git, "init", "--quiet", "--bare", "--initial-branch=main", p).CombinedOutput()
	if err != nil {
		return fmt.Errorf("creating the repository %s: %w: %s", p, err, sanitize(strings.TrimSpace(string(out))))
	}
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", args...)
	}
}

func (s *Server) config() (*ssh.ServerConfig, error) {
	signer, err := ssh.ParsePrivateKey(s.HostKey)
	if err != nil {
		return nil, errors.New("reading the host key: not an OpenSSH private key")
	}
	keys, err := parseAuthorized(s.Authorized)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			g, ok := keys[string(key.Marshal())]
			if !ok {
				return nil, errors.New("key not authorized")
			}
			return &ssh.Permissions{Extensions: map[string]string{"forced": g.forced, "key": ssh.FingerprintSHA256(key)}}, nil
		},
		ServerVersion: "SSH-2.0-homelab-gitserver",
	}
	cfg.AddHostKey(signer)
	return cfg, nil
}

// Run listens on Listen and serves until ctx ends or Close is called.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("git server: listening on %s: %w", s.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (which it closes) until ctx ends or Close is called.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	cfg, err := s.config()
	if err != nil {
		ln.Close()
		return fmt.Errorf("git server: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.ln, s.cancel = ln, cancel
	s.conns = map[net.Conn]bool{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.logf("git server: serving %s on %s", s.Dir, ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			s.wg.Wait()
			if ctx.Err() != nil || s.isClosed() {
				return nil
			}
			return fmt.Errorf("git server: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			// Close ran between Accept and here: it could not close
			// this connection, so it goes now, before Serve waits.
			s.mu.Unlock()
			c.Close()
			continue
		}
		if max := s.maxConns(); len(s.conns) >= max {
			s.mu.Unlock()
			s.logf("git server: %s: refused: %d connections already", c.RemoteAddr(), max)
			c.Close()
			continue
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c, cfg)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return DefaultMaxConns
}

func (s *Server) maxConnTime() time.Duration {
	if s.MaxConnTime > 0 {
		return s.MaxConnTime
	}
	return DefaultMaxConnTime
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the server and ends its connections.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		// Ends the git commands still running.
		s.cancel()
	}
	for c := range s.conns {
		c.Close()
	}
	if s.ln != nil {
		return s.ln.Close()
	}
	return nil
}

func (s *Server) serveConn(ctx context.Context, c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	limit := s.maxConnTime()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// The limit ends the git commands (their context) and the
	// connection, which ends the client's reads and writes.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.logf("git server: %s: closed after %s, the limit of a connection", c.RemoteAddr(), limit)
		}
	}()
	c.SetDeadline(time.Now().Add(min(handshakeTimeout, limit)))
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	c.SetDeadline(time.Time{})
	if err != nil {
		s.logf("git server: %s: refused: %v", c.RemoteAddr(), err)
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.Prohibited, "this server runs git-upload-pack and git-receive-pack only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ctx, sc, ch, creqs)
		}()
	}
	wg.Wait()
}

// session serves one session channel: env (GIT_PROTOCOL only), then one
// exec of a git command.
func (s *Server) session(ctx context.Context, sc *ssh.ServerConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			ok := ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" && gitProtocol.MatchString(kv.Value)
			if ok {
				env = append(env, "GIT_PROTOCOL="+kv.Value)
			}
			req.Reply(ok, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			code, copied := s.exec(ctx, sc, ch, cmd.Command, env)
			ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, code))
			ch.Close()
			// The copy of the client's input ends when the client closes
			// its side in answer; one that does not loses its connection.
			select {
			case <-copied:
			case <-time.After(stdinGrace):
				s.logf("git server: %s: the client kept its session open after git ended: closing the connection", sc.RemoteAddr())
				sc.Close()
			case <-ctx.Done():
			}
			return
		case "shell":
			req.Reply(true, nil)
			fmt.Fprintln(ch.Stderr(), "homelab git server: no interactive shell here; use git clone/fetch/push")
			ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, 128))
			return
		default:
			// pty-req, subsystem, x11-req, port forwarding...
			req.Reply(false, nil)
		}
	}
}

// exec runs one git command for the session; copied is closed once the
// client's input is no longer read.
func (s *Server) exec(ctx context.Context, sc *ssh.ServerConn, ch ssh.Channel, command string, env []string) (code uint32, copied <-chan struct{}) {
	who := sc.Permissions.Extensions["key"]
	done := make(chan struct{})
	refuse := func(msg string) (uint32, <-chan struct{}) {
		s.logf("git server: %s (%s): refused %q: %s", sc.RemoteAddr(), who, sanitize(command), msg)
		fmt.Fprintln(ch.Stderr(), "homelab git server: "+msg)
		close(done)
		return 128, done
	}
	verb, p, err := parseGitCommand(command)
	if err != nil {
		return refuse(err.Error())
	}
	if forced := sc.Permissions.Extensions["forced"]; forced != "" {
		fverb, fpath, _ := parseGitCommand(forced)
		if verb != fverb {
			return refuse("this key may only run git-" + fverb + " (the deploy key may fetch, not push)")
		}
		p = fpath
	}
	dir, err := s.repoDir(p)
	if err != nil {
		return refuse(err.Error())
	}
	git := s.Git
	if git == "" {
		git = "git"
	}
	s.logf("git server: %s (%s): git %s %s", sc.RemoteAddr(), who, verb, dir)
	cmd := exec.CommandContext(ctx, git, verb, dir)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	cmd.WaitDelay = pipeGrace
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return refuse("internal error")
	}
	if err := cmd.Start(); err != nil {
		s.logf("git server: starting git %s: %v", verb, err)
		return refuse("could not start git " + verb)
	}
	go func() {
		defer close(done)
		// Ends when the client closes its side, or, once git exited
		// (Wait closes stdin), at the client's next write.
		io.Copy(stdin, ch)
		stdin.Close()
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, done
	case errors.Is(err, exec.ErrWaitDelay):
		// git succeeded; something it started kept its output open.
		s.logf("git server: git %s exited, but its output stayed open %s longer: closed", verb, pipeGrace)
		return 0, done
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return uint32(exit.ExitCode()), done
	default:
		return 128, done
	}
}

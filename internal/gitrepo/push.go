package gitrepo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/render"
)

// Branch is the only branch homelab writes.
const Branch = "refs/heads/main"

// sessionTimeout bounds a push or a head read whose context has no
// deadline.
const sessionTimeout = 5 * time.Minute

// StateFilePushed records, in the state folder, the last commit Push
// made and its tree, and the commit it is pushing (pending) from just
// before the pack is sent until the server has taken it: a push cut
// short after the server updated the branch (Ctrl-C, a timeout, a
// failed state write) leaves the branch at a commit homelab made, which
// the next Push knows as its own.
const StateFilePushed = "gitrepo-pushed"

// Store keeps files encrypted; *secrets.Store is one.
type Store interface {
	PutFile(name string, data []byte) error
	GetFile(name string) ([]byte, error)
}

// Target is where Push sends the tree: an SSH server holding a bare
// repository, reached through Dial.
type Target struct {
	// Dial opens the connection to Addr (net.Dialer.DialContext, or the
	// in-process tunnel's DialContext).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Addr is the SSH server's host:port.
	Addr string
	// User is the SSH user (default "git").
	User string
	// Path is the repository's path on the server, as in the ssh:// URL
	// (for example /srv/git/lab.git).
	Path string
	// HostKey is the server's public host key, authorized_keys format
	// (gitops.GitAccess.HostPublic). The server must present exactly it.
	HostKey string
	// PushKey is the private key allowed to push (OpenSSH PEM).
	PushKey []byte
}

// Options tune Push.
type Options struct {
	// Message is the commit message (default "homelab: update the lab's repository").
	Message string
	// Author signs the commit (default homelab <homelab@localhost>, now).
	Author Signature
	// Force pushes even when the remote branch is not the commit homelab
	// pushed last (someone pushed by hand): the new commit goes on top
	// of the remote one, so their commits stay in the history, but their
	// files are replaced by the artifacts.
	Force bool
	// State records the last pushed commit; without it every push whose
	// remote branch exists needs Force.
	State Store
}

// Result says what Push did.
type Result struct {
	// Commit is the branch's commit after the push (the remote head
	// when nothing was pushed).
	Commit ID
	// Parent is the commit the new one was built on (zero for the first
	// commit or when nothing was pushed).
	Parent ID
	// Tree is the artifacts' tree.
	Tree ID
	// Pushed is false when the remote already had this tree.
	Pushed bool
}

// pushed is StateFilePushed's content.
type pushed struct {
	Repository string `json:"repository"`
	Commit     string `json:"commit"`
	Tree       string `json:"tree"`
	// Pending is the commit being pushed, recorded before its pack is
	// sent; gone once the push is done. Commit ids carry the author
	// time, so it is the exact id, not one to build again.
	Pending *pendingPush `json:"pending,omitempty"`
}

type pendingPush struct {
	Commit string `json:"commit"`
	Tree   string `json:"tree"`
	Parent string `json:"parent"`
}

// MovedError is returned when the remote branch is not the commit
// homelab pushed last.
type MovedError struct {
	Remote, Last ID
}

func (e *MovedError) Error() string {
	if e.Last.IsZero() {
		return fmt.Sprintf("the repository's main branch is at %s, which homelab did not push from this state folder", e.Remote)
	}
	return fmt.Sprintf("the repository's main branch moved: it is at %s, homelab pushed %s last (someone pushed by hand?)", e.Remote, e.Last)
}

// Push commits arts as the whole tree of the branch main, on top of the
// remote head, and pushes it with git's receive-pack protocol over SSH.
// When the remote head is the commit Push made last (opts.State) and
// the tree is the same, nothing is pushed. A commit whose push was cut
// short after the server took it (recorded as pending) counts as the
// last one. When the remote head is another commit, Push refuses with a
// *MovedError unless opts.Force.
func Push(ctx context.Context, t Target, arts []render.Artifact, opts Options) (Result, error) {
	snap, err := BuildTree(arts)
	if err != nil {
		return Result{}, err
	}
	if t.Dial == nil || t.Addr == "" || t.Path == "" {
		return Result{}, errors.New("pushing the repository: the target needs Dial, Addr and Path")
	}
	if strings.ContainsAny(t.Path, "'\n\x00") {
		return Result{}, fmt.Errorf("pushing the repository: path %q has a quote or a newline", t.Path)
	}
	repoName := "ssh://" + t.Addr + t.Path
	last, err := loadPushed(opts.State, repoName)
	if err != nil {
		return Result{}, err
	}

	client, err := dialSSH(ctx, t)
	if err != nil {
		return Result{}, err
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()

	sess, err := client.NewSession()
	if err != nil {
		return Result{}, fmt.Errorf("pushing to %s: opening an SSH session: %w", t.Addr, err)
	}
	defer sess.Close()
	stderr := &limitedWriter{n: 4096}
	sess.Stderr = stderr
	stdin, err := sess.StdinPipe()
	if err != nil {
		return Result{}, fmt.Errorf("pushing to %s: %w", t.Addr, err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return Result{}, fmt.Errorf("pushing to %s: %w", t.Addr, err)
	}
	if err := sess.Start("git-receive-pack '" + t.Path + "'"); err != nil {
		return Result{}, fmt.Errorf("pushing to %s: starting git-receive-pack: %w", t.Addr, err)
	}
	wrap := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("pushing to %s: %w", t.Addr, ctx.Err())
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return fmt.Errorf("pushing to %s: %w (server said: %s)", t.Addr, err, sanitize(msg))
		}
		return fmt.Errorf("pushing to %s: %w", t.Addr, err)
	}
	br := bufio.NewReader(stdout)
	adv, err := ParseAdvertisement(br)
	if err != nil {
		sess.Wait()
		return Result{}, wrap(err)
	}
	head := adv.Refs[Branch]
	res := Result{Tree: snap.Tree}

	if !head.IsZero() && head == last.pending.commit {
		// The push before was cut short after the server had taken
		// its commit: it is homelab's own.
		last = lastPush{commit: last.pending.commit, tree: last.pending.tree}
		if snap.Tree == last.tree {
			if err := savePushed(opts.State, pushed{Repository: repoName, Commit: head.String(), Tree: last.tree.String()}); err != nil {
				return Result{}, err
			}
		}
	}

	switch {
	case head.IsZero():
		// An empty repository (or one whose main was deleted): nothing
		// to lose, start the history.
	case head == last.commit && snap.Tree == last.tree:
		stdin.Write([]byte("0000"))
		stdin.Close()
		sess.Wait()
		res.Commit = head
		return res, nil
	case head != last.commit && !opts.Force:
		stdin.Write([]byte("0000"))
		stdin.Close()
		sess.Wait()
		return Result{}, &MovedError{Remote: head, Last: last.commit}
	}

	author := opts.Author
	if author.Name == "" {
		author.Name = "homelab"
	}
	if author.Email == "" {
		author.Email = "homelab@localhost"
	}
	if author.When.IsZero() {
		author.When = time.Now()
	}
	author.Name, author.Email = cleanSignaturePart(author.Name), cleanSignaturePart(author.Email)
	msg := opts.Message
	if strings.TrimSpace(msg) == "" {
		msg = "homelab: update the lab's repository"
	}
	res.Parent = head
	res.Commit = snap.commit(head, author, msg)

	caps := []string{}
	for _, c := range []string{"report-status", "agent=homelab"} {
		if k, _, _ := strings.Cut(c, "="); adv.Has(k) || k == "agent" {
			caps = append(caps, c)
		}
	}
	var req bytes.Buffer
	req.Write(pktLine(fmt.Sprintf("%s %s %s\x00%s\n", head, res.Commit, Branch, strings.Join(caps, " "))))
	req.WriteString("0000")
	if err := writePack(&req, snap.objects); err != nil {
		return Result{}, fmt.Errorf("pushing to %s: writing the pack: %w", t.Addr, err)
	}
	// From here the server may take the commit whatever happens to this
	// process: record it first.
	rec := pushed{Repository: repoName, Pending: &pendingPush{Commit: res.Commit.String(), Tree: res.Tree.String(), Parent: head.String()}}
	if !last.commit.IsZero() {
		rec.Commit, rec.Tree = last.commit.String(), last.tree.String()
	}
	if err := savePending(opts.State, rec); err != nil {
		stdin.Close()
		sess.Wait()
		return Result{}, err
	}
	if _, err := stdin.Write(req.Bytes()); err != nil {
		return Result{}, wrap(fmt.Errorf("sending the pack: %w", err))
	}
	if adv.Has("report-status") {
		if err := parseReport(br); err != nil {
			stdin.Close()
			sess.Wait()
			return Result{}, wrap(err)
		}
	}
	stdin.Close()
	if err := sess.Wait(); err != nil {
		return Result{}, wrap(fmt.Errorf("git-receive-pack: %w", err))
	}
	if err := savePushed(opts.State, pushed{Repository: repoName, Commit: res.Commit.String(), Tree: res.Tree.String()}); err != nil {
		return res, err
	}
	res.Pushed = true
	return res, nil
}

// Head reads the remote branch's commit (zero for an empty repository)
// without changing anything.
func Head(ctx context.Context, t Target) (ID, error) {
	client, err := dialSSH(ctx, t)
	if err != nil {
		return ID{}, err
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	sess, err := client.NewSession()
	if err != nil {
		return ID{}, fmt.Errorf("reading %s: opening an SSH session: %w", t.Addr, err)
	}
	defer sess.Close()
	stdin, _ := sess.StdinPipe()
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("git-upload-pack '" + t.Path + "'"); err != nil {
		return ID{}, fmt.Errorf("reading %s: %w", t.Addr, err)
	}
	adv, err := ParseAdvertisement(bufio.NewReader(stdout))
	stdin.Write([]byte("0000"))
	stdin.Close()
	sess.Wait()
	if err != nil {
		return ID{}, fmt.Errorf("reading %s: %w", t.Addr, err)
	}
	return adv.Refs[Branch], nil
}

func dialSSH(ctx context.Context, t Target) (*ssh.Client, error) {
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(t.HostKey))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: the manager's host key is not an SSH public key: %w", t.Addr, err)
	}
	signer, err := ssh.ParsePrivateKey(t.PushKey)
	if err != nil {
		// The parser's error may quote the key: say only what failed.
		return nil, fmt.Errorf("connecting to %s: the push key is not an OpenSSH private key", t.Addr)
	}
	user := t.User
	if user == "" {
		user = "git"
	}
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   ssh.FixedHostKey(hostKey),
		HostKeyAlgorithms: []string{hostKey.Type()},
		Timeout:           30 * time.Second,
	}
	conn, err := t.Dial(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", t.Addr, err)
	}
	// One deadline for the whole exchange: a server that stops
	// answering (a tunnel gone quiet) must not hold the push forever.
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(sessionTimeout)
	}
	conn.SetDeadline(dl)
	c, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connecting to %s over SSH: %w", t.Addr, err)
	}
	return ssh.NewClient(c, chans, reqs), nil
}

type lastPush struct {
	commit, tree ID
	// pending is the commit of a push that may not have finished.
	pending struct{ commit, tree ID }
}

func loadPushed(st Store, repo string) (lastPush, error) {
	if st == nil {
		return lastPush{}, nil
	}
	data, err := st.GetFile(StateFilePushed)
	if errors.Is(err, fs.ErrNotExist) {
		return lastPush{}, nil
	}
	if err != nil {
		return lastPush{}, fmt.Errorf("reading the last pushed commit: %w", err)
	}
	var p pushed
	if err := json.Unmarshal(data, &p); err != nil {
		return lastPush{}, fmt.Errorf("reading the last pushed commit: %s is not what homelab wrote", StateFilePushed)
	}
	if p.Repository != repo {
		return lastPush{}, nil
	}
	var last lastPush
	bad := fmt.Errorf("reading the last pushed commit: %s is not what homelab wrote", StateFilePushed)
	if p.Commit != "" || p.Pending == nil {
		c, err1 := ParseID(p.Commit)
		tr, err2 := ParseID(p.Tree)
		if err1 != nil || err2 != nil {
			return lastPush{}, bad
		}
		last.commit, last.tree = c, tr
	}
	if p.Pending != nil {
		c, err1 := ParseID(p.Pending.Commit)
		tr, err2 := ParseID(p.Pending.Tree)
		if err1 != nil || err2 != nil || c.IsZero() {
			return lastPush{}, bad
		}
		last.pending.commit, last.pending.tree = c, tr
	}
	return last, nil
}

// savePending records the commit about to be pushed, beside the last one.
func savePending(st Store, p pushed) error {
	if st == nil {
		return nil
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := st.PutFile(StateFilePushed, data); err != nil {
		return fmt.Errorf("pushing: recording the commit about to be pushed in the state folder: %w", err)
	}
	return nil
}

func savePushed(st Store, p pushed) error {
	if st == nil {
		return nil
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := st.PutFile(StateFilePushed, data); err != nil {
		return fmt.Errorf("pushed %s, but recording it in the state folder failed: %w", p.Commit, err)
	}
	return nil
}

// limitedWriter keeps the first n bytes written to it; safe to read
// while the SSH session still writes.
type limitedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		k := min(len(p), l.n)
		l.buf.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

package proxmox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/homelab-dev/homelab/internal/spec"
)

// HostShell runs commands on the Proxmox host, for the few things the API
// has no call for: writing cloud-init snippets, pushing files into
// containers (pct push), running commands in them (pct exec), and the
// host's egress NAT.
type HostShell interface {
	// Run runs argv on the host with stdin and returns its standard
	// output. A command that exits non-zero is an error carrying its
	// standard error.
	Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error)
	Close() error
}

// SSHShell is a HostShell over SSH, with the host key checked against a
// known_hosts file.
type SSHShell struct {
	mu     sync.Mutex
	client *ssh.Client
}

// DialSSH connects as cfg says (user root, port 22, ~/.ssh/known_hosts and
// the SSH agent by default). host is used when cfg.Address is empty.
func DialSSH(ctx context.Context, cfg spec.SSH, host string) (*SSHShell, error) {
	user := cfg.User
	if user == "" {
		user = "root"
	}
	addr := cfg.Address
	if addr == "" {
		addr = host
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	khFile := cfg.KnownHosts
	if khFile == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("finding known_hosts: %w", err)
		}
		khFile = filepath.Join(home, ".ssh", "known_hosts")
	}
	hk, err := knownhosts.New(khFile)
	if err != nil {
		return nil, withHint(fmt.Errorf("reading SSH known hosts %s: %w", khFile, err),
			fmt.Sprintf("add the host's key once: ssh-keyscan %s >> %s (and compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host)", strings.TrimSuffix(addr, ":22"), khFile))
	}
	var auth []ssh.AuthMethod
	if cfg.KeyFile != "" {
		pem, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading SSH key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, withHint(fmt.Errorf("reading SSH key %s: %w", cfg.KeyFile, err), "use an unencrypted key file, or leave keyFile empty and load the key into ssh-agent")
		}
		auth = append(auth, ssh.PublicKeys(signer))
	} else if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("connecting to ssh-agent: %w", err)
		}
		auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	} else {
		return nil, withHint(errors.New("no SSH key for the Proxmox host: host.proxmox.ssh.keyFile is empty and no ssh-agent runs"),
			"set host.proxmox.ssh.keyFile or start ssh-agent and ssh-add your key")
	}
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the Proxmox host over SSH: %w", err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: hk})
	if err != nil {
		conn.Close()
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			return nil, withHint(fmt.Errorf("SSH to the Proxmox host %s: host key not known or changed: %w", addr, err),
				fmt.Sprintf("check the host's key and add it to %s (ssh-keyscan %s)", khFile, strings.TrimSuffix(addr, ":22")))
		}
		return nil, fmt.Errorf("SSH to the Proxmox host %s: %w", addr, err)
	}
	return &SSHShell{client: ssh.NewClient(c, chans, reqs)}, nil
}

// Run runs argv (each word single-quoted) in a new session.
func (s *SSHShell) Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	sess, err := s.client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("opening an SSH session: %w", err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errb
	if stdin != nil {
		sess.Stdin = bytes.NewReader(stdin)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Run(shellQuote(argv)) }()
	select {
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGTERM)
		return nil, ctx.Err()
	case err := <-done:
		if err != nil {
			return out.Bytes(), fmt.Errorf("%s on the host: %w: %s", argv[0], err, strings.TrimSpace(lastLines(errb.String(), 5)))
		}
	}
	return out.Bytes(), nil
}

// Close ends the connection.
func (s *SSHShell) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client.Close()
}

func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

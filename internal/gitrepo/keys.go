package gitrepo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"

	"golang.org/x/crypto/ssh"
)

// StateFilePushKey keeps the operator's push key in the state folder.
const StateFilePushKey = "gitrepo-push-key"

// PushKey is the key homelab pushes the lab's repository with: the one
// key that may write (Flux's deploy key may only fetch).
type PushKey struct {
	// Key is the private key (OpenSSH PEM): a secret.
	Key []byte `json:"key"`
	// Public is its authorized_keys line.
	Public string `json:"public"`
}

// LoadOrCreatePushKey reads the push key from the state folder, creating
// it on first use. changed says whether it was created.
func LoadOrCreatePushKey(st Store) (*PushKey, bool, error) {
	data, err := st.GetFile(StateFilePushKey)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, false, fmt.Errorf("reading the git push key: %w", err)
	default:
		var k PushKey
		if err := json.Unmarshal(data, &k); err != nil || len(k.Key) == 0 || k.Public == "" {
			return nil, false, fmt.Errorf("reading the git push key: %s is not what homelab wrote", StateFilePushKey)
		}
		return &k, false, nil
	}
	priv, pub, err := NewSSHKey("homelab push key")
	if err != nil {
		return nil, false, err
	}
	k := &PushKey{Key: priv, Public: pub}
	data, err = json.Marshal(k)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the git push key: %w", err)
	}
	if err := st.PutFile(StateFilePushKey, data); err != nil {
		return nil, false, fmt.Errorf("storing the git push key: %w", err)
	}
	return k, true, nil
}

// NewSSHKey makes an ed25519 SSH key: the private key (OpenSSH PEM, a
// secret) and its authorized_keys line ending in comment.
func NewSSHKey(comment string) (private []byte, public string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("creating the %s: %w", comment, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, "", fmt.Errorf("creating the %s: %w", comment, err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", fmt.Errorf("creating the %s: %w", comment, err)
	}
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment, nil
}

// TargetFromURL makes a Target from an ssh:// repository URL
// (ssh://git@10.10.1.5/srv/git/lab.git, as gitops.Repository gives it).
func TargetFromURL(repoURL string, dial func(ctx context.Context, network, addr string) (net.Conn, error), hostPublic string, pushKey []byte) (Target, error) {
	u, err := url.Parse(repoURL)
	if err != nil || u.Scheme != "ssh" || u.Hostname() == "" || u.Path == "" {
		return Target{}, fmt.Errorf("repository %q is not an ssh:// URL with a path", repoURL)
	}
	port := u.Port()
	if port == "" {
		port = "22"
	}
	user := u.User.Username()
	if user == "" {
		user = "git"
	}
	return Target{Dial: dial, Addr: net.JoinHostPort(u.Hostname(), port), User: user, Path: u.Path,
		HostKey: hostPublic, PushKey: pushKey}, nil
}

package gitops

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"

	"github.com/homelab-dev/homelab/internal/gitrepo"
)

// StateFileGitAccess keeps GitAccess in the state folder.
const StateFileGitAccess = "gitops-git-access"

// GitAccess is how Flux reaches the repository on the manager VM over
// SSH: a deploy key for Flux, and the manager's SSH host key, made by
// homelab so that known_hosts is known before the VM exists (the host
// key goes to the manager through cloud-init). Both private keys are
// secrets: they live only encrypted in the state folder.
type GitAccess struct {
	// DeployKey is Flux's private key (OpenSSH PEM); DeployPublic its
	// authorized_keys line for the git user on the manager.
	DeployKey    []byte `json:"deployKey"`
	DeployPublic string `json:"deployPublic"`
	// HostKey is the manager's SSH host key (OpenSSH PEM); HostPublic its
	// public half.
	HostKey    []byte `json:"hostKey"`
	HostPublic string `json:"hostPublic"`
}

// LoadOrCreateGitAccess reads the lab's Git access keys, creating them
// on first use. changed says whether they were created.
func LoadOrCreateGitAccess(st Store) (*GitAccess, bool, error) {
	data, err := st.GetFile(StateFileGitAccess)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, false, fmt.Errorf("reading the git access keys: %w", err)
	default:
		var g GitAccess
		if err := json.Unmarshal(data, &g); err != nil || len(g.DeployKey) == 0 || len(g.HostKey) == 0 {
			return nil, false, fmt.Errorf("reading the git access keys: %s is not what homelab wrote", StateFileGitAccess)
		}
		return &g, false, nil
	}
	g := &GitAccess{}
	if g.DeployKey, g.DeployPublic, err = gitrepo.NewSSHKey("flux deploy key"); err != nil {
		return nil, false, err
	}
	if g.HostKey, g.HostPublic, err = gitrepo.NewSSHKey("manager host key"); err != nil {
		return nil, false, err
	}
	data, err = json.Marshal(g)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the git access keys: %w", err)
	}
	if err := st.PutFile(StateFileGitAccess, data); err != nil {
		return nil, false, fmt.Errorf("storing the git access keys: %w", err)
	}
	return g, true, nil
}

// FluxSecret is the data of the flux-system secret for an ssh:// repository
// URL: the deploy key and a known_hosts line for the repository's host
// with the manager's host key.
func (g *GitAccess) FluxSecret(repoURL string) (map[string][]byte, error) {
	u, err := url.Parse(repoURL)
	if err != nil || u.Scheme != "ssh" || u.Hostname() == "" {
		return nil, fmt.Errorf("repository %q is not an ssh:// URL", repoURL)
	}
	host := u.Hostname()
	if p := u.Port(); p != "" && p != "22" {
		host = "[" + host + "]:" + p
	}
	hostPub := strings.Join(strings.Fields(g.HostPublic)[:2], " ")
	return map[string][]byte{
		"identity":     g.DeployKey,
		"identity.pub": []byte(g.DeployPublic + "\n"),
		"known_hosts":  []byte(host + " " + hostPub + "\n"),
	}, nil
}

package render

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// DefaultNameservers are written in the manager's network-config when the
// VPN pushes no DNS: the manager resolves names to download its tools.
var DefaultNameservers = []string{"1.1.1.1", "9.9.9.9"}

// Tool is one admin tool the manager installs: where to download it, the
// published checksum file to verify it against, and how to unpack it.
type Tool struct {
	Name string
	// URL of the binary or archive.
	URL string
	// SumsURL lists "sha256  file" lines; Sum names the line's file (empty:
	// the file holds only the digest of URL).
	SumsURL, SumsFile string
	// Archive is true for a .tar.gz holding the binary at its root.
	Archive bool
}

// ManagerTools lists the tools at the versions pinned in the spec, for
// linux amd64.
func ManagerTools(t spec.Tools) []Tool {
	bare := func(v string) string { return strings.TrimPrefix(v, "v") }
	vee := func(v string) string { return "v" + bare(v) }
	return []Tool{
		{Name: "talosctl",
			URL:     "https://github.com/siderolabs/talos/releases/download/" + vee(t.Talosctl) + "/talosctl-linux-amd64",
			SumsURL: "https://github.com/siderolabs/talos/releases/download/" + vee(t.Talosctl) + "/sha256sum.txt", SumsFile: "talosctl-linux-amd64"},
		{Name: "kubectl",
			URL:     "https://dl.k8s.io/release/" + vee(t.Kubectl) + "/bin/linux/amd64/kubectl",
			SumsURL: "https://dl.k8s.io/release/" + vee(t.Kubectl) + "/bin/linux/amd64/kubectl.sha256"},
		{Name: "flux", Archive: true,
			URL:     "https://github.com/fluxcd/flux2/releases/download/" + vee(t.Flux) + "/flux_" + bare(t.Flux) + "_linux_amd64.tar.gz",
			SumsURL: "https://github.com/fluxcd/flux2/releases/download/" + vee(t.Flux) + "/flux_" + bare(t.Flux) + "_checksums.txt", SumsFile: "flux_" + bare(t.Flux) + "_linux_amd64.tar.gz"},
		{Name: "k9s", Archive: true,
			URL:     "https://github.com/derailed/k9s/releases/download/" + vee(t.K9s) + "/k9s_Linux_amd64.tar.gz",
			SumsURL: "https://github.com/derailed/k9s/releases/download/" + vee(t.K9s) + "/checksums.sha256", SumsFile: "k9s_Linux_amd64.tar.gz"},
	}
}

// yamlString quotes s as a YAML double-quoted scalar (JSON strings are).
func yamlString(s string) string { return strconv.Quote(s) }

// GitServer is what the manager needs to serve the lab's Git repository
// over SSH: the host key homelab made (gitops.GitAccess, so that Flux's
// known_hosts is known before the VM exists) and the two keys that may
// use the repository.
type GitServer struct {
	// HostKey is the manager's SSH host key, OpenSSH PEM: a secret.
	HostKey []byte
	// HostPublic is its public half (authorized_keys format).
	HostPublic string
	// PushPublic may fetch and push (homelab's push key).
	PushPublic string
	// DeployPublic may only fetch (Flux's deploy key).
	DeployPublic string
}

// Option adds an input to Render.
type Option func(*options)

type options struct {
	git *GitServer
}

// WithGitServer makes the manager host the lab's Git repository: the
// manager's cloud-init gets the host key, a git user restricted to
// git-shell and the bare repository, and Render adds the files the local
// provider's stand-in git server reads (git/manager/*).
func WithGitServer(g GitServer) Option {
	return func(o *options) { o.git = &g }
}

// GitRepoPath is the lab's bare repository on the manager VM, as the
// ssh:// URL names it.
func GitRepoPath(lab *spec.Lab) string { return "/srv/git/" + lab.Name + ".git" }

// GitAuthorizedKeys is the git user's authorized_keys on the manager: the
// push key runs git-shell (fetch and push); Flux's deploy key is forced
// to git-upload-pack of the lab's repository (fetch only). Both are
// restricted (no pty, no forwarding). The local provider's git server
// reads the same file with the same meaning.
func GitAuthorizedKeys(repoPath, pushPublic, deployPublic string) (string, error) {
	for _, k := range []string{pushPublic, deployPublic} {
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(rest) != 0 || strings.ContainsAny(k, "\n\r") {
			return "", fmt.Errorf("git authorized_keys: %q is not one public key line", k)
		}
	}
	if !plainRepoPath(repoPath) {
		return "", fmt.Errorf("git authorized_keys: repository path %q is not an absolute path to a .git folder", repoPath)
	}
	return "restrict " + strings.TrimSpace(pushPublic) + "\n" +
		`restrict,command="git-upload-pack '` + repoPath + `'" ` + strings.TrimSpace(deployPublic) + "\n", nil
}

// plainRepoPath accepts absolute, clean paths of a .git folder made of
// plain characters (they go into shell-quoted commands).
func plainRepoPath(p string) bool {
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, ".git") || len(p) < 6 {
		return false
	}
	for _, el := range strings.Split(p[1:], "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r)) {
			return false
		}
	}
	return true
}

// gitSetupScript creates the bare repository and installs the git user's
// authorized_keys; safe to run again.
func gitSetupScript(repo string) string {
	return `#!/bin/sh
# Creates the lab's bare repository (branch main) and the git user's
# authorized_keys (from /usr/local/share/homelab/git-authorized_keys).
set -eu
repo=` + repo + `
home=$(getent passwd git | cut -d: -f6)
install -d -o git -g git -m 0755 "$(dirname "$repo")"
if [ ! -f "$repo/HEAD" ]; then
  runuser -u git -- git init --quiet --bare --initial-branch=main "$repo"
fi
install -d -o git -g git -m 0700 "$home/.ssh"
install -o git -g git -m 0600 /usr/local/share/homelab/git-authorized_keys "$home/.ssh/authorized_keys"
`
}

// renderCloudInit writes the manager VM's NoCloud seed: user-data (user,
// SSH keys, tools), meta-data and network-config (static address on the
// admin network). Without a Git server it holds no secret: SSH keys are
// public keys, and the talosconfig and kubeconfig are copied over SSH
// later, never through cloud-init (whose seed is readable on the Proxmox
// storage). With one (git != nil), user-data carries the manager's SSH
// host key and is flagged Secret, like the Talos configs that go the
// same way; git/manager/* are the local provider's git server's files.
func renderCloudInit(lab *spec.Lab, _ *secrets.Bundle, git *GitServer) ([]Artifact, error) {
	var m spec.Machine
	for _, x := range lab.Machines() {
		if x.Role == spec.MachineManager {
			m = x
		}
	}
	nic, ok := m.NIC(spec.RoleAdmin)
	if !ok || !nic.Address.IsValid() {
		return nil, fmt.Errorf("manager: no address on the admin network")
	}
	mg := &lab.Manager
	for i, k := range mg.SSHKeys {
		if strings.ContainsAny(k, "\n\r") || strings.Contains(k, "PRIVATE KEY") {
			return nil, fmt.Errorf("manager.sshKeys[%d]: not a single-line public key", i)
		}
	}
	var authorized string
	if git != nil {
		var err error
		if authorized, err = GitAuthorizedKeys(GitRepoPath(lab), git.PushPublic, git.DeployPublic); err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
		hostPub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(git.HostPublic))
		if err != nil || len(rest) != 0 || hostPub.Type() != ssh.KeyAlgoED25519 {
			return nil, fmt.Errorf("manager: the git host key's public half is not one ssh-ed25519 key")
		}
		signer, err := ssh.ParsePrivateKey(git.HostKey)
		if err != nil {
			return nil, fmt.Errorf("manager: the git host key is not an OpenSSH private key")
		}
		if !bytes.Equal(signer.PublicKey().Marshal(), hostPub.Marshal()) {
			return nil, fmt.Errorf("manager: the git host key and its public half do not match")
		}
	}

	var u strings.Builder
	u.WriteString("#cloud-config\n")
	u.WriteString(header(lab, "manager VM cloud-init user-data"))
	if git == nil {
		u.WriteString("# Holds no secret: public SSH keys and public download URLs only.\n")
	} else {
		u.WriteString("# SECRET: holds the manager's SSH host key (ssh_keys); everything else is public.\n")
	}
	fmt.Fprintf(&u, "hostname: %s\nfqdn: %s\nmanage_etc_hosts: true\n", m.Name, m.Name)
	if git != nil {
		// The one host key homelab made: its public half is already in
		// Flux's known_hosts.
		u.WriteString("ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n")
		for _, line := range strings.Split(strings.TrimRight(string(git.HostKey), "\n"), "\n") {
			u.WriteString("    " + line + "\n")
		}
		fmt.Fprintf(&u, "  ed25519_public: %s\n", yamlString(strings.TrimSpace(git.HostPublic)))
	}
	u.WriteString("users:\n")
	fmt.Fprintf(&u, "  - name: %s\n", yamlString(mg.User))
	u.WriteString("    groups: [sudo]\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n")
	if len(mg.SSHKeys) > 0 {
		u.WriteString("    ssh_authorized_keys:\n")
		for _, k := range mg.SSHKeys {
			fmt.Fprintf(&u, "      - %s\n", yamlString(strings.TrimSpace(k)))
		}
	}
	if git != nil {
		// git-shell lets the push key run only git's fetch and push;
		// authorized_keys comes from homelab-git-setup (below).
		u.WriteString("  - name: git\n    gecos: the lab's Git repository\n    homedir: /srv/git\n    shell: /usr/bin/git-shell\n    lock_passwd: true\n")
	}
	u.WriteString("ssh_pwauth: false\ndisable_root: true\n")
	u.WriteString("package_update: true\npackages:\n")
	for _, p := range []string{"bash-completion", "ca-certificates", "curl", "git", "qemu-guest-agent"} {
		fmt.Fprintf(&u, "  - %s\n", p)
	}
	u.WriteString("write_files:\n")
	writeFile := func(path, perm, content string) {
		fmt.Fprintf(&u, "  - path: %s\n    permissions: %q\n    content: |\n", path, perm)
		for _, line := range strings.Split(strings.TrimSuffix(content, "\n"), "\n") {
			if line == "" {
				u.WriteString("\n")
				continue
			}
			u.WriteString("      " + line + "\n")
		}
	}
	writeFile("/usr/local/sbin/homelab-install-tools", "0755", installScript(ManagerTools(mg.Tools))+"\n")
	if git != nil {
		writeFile("/etc/ssh/sshd_config.d/homelab-host-key.conf", "0644",
			"# homelab: serve only the host key homelab made (Flux's known_hosts has it).\nHostKey /etc/ssh/ssh_host_ed25519_key\n")
		writeFile("/usr/local/share/homelab/git-authorized_keys", "0644", authorized)
		writeFile("/usr/local/sbin/homelab-git-setup", "0755", gitSetupScript(GitRepoPath(lab)))
	}
	u.WriteString("runcmd:\n  - [systemctl, enable, --now, qemu-guest-agent]\n")
	if git != nil {
		u.WriteString("  - [/usr/local/sbin/homelab-git-setup]\n")
	}
	u.WriteString("  - [/usr/local/sbin/homelab-install-tools]\n")

	meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", m.Name, m.Name)

	var n strings.Builder
	n.WriteString(header(lab, "manager VM cloud-init network-config"))
	n.WriteString("version: 2\nethernets:\n")
	fmt.Fprintf(&n, "  %s:\n    match:\n      macaddress: %q\n    set-name: %s\n", nic.Network, nic.MAC.String(), nic.Network)
	fmt.Fprintf(&n, "    addresses:\n      - %s/%d\n", nic.Address, nic.Prefix.Bits())
	if nic.Gateway.IsValid() {
		fmt.Fprintf(&n, "    routes:\n      - to: default\n        via: %s\n", nic.Gateway)
	}
	dns := DefaultNameservers
	if len(lab.VPN.DNS) > 0 {
		dns = nil
		for _, d := range lab.VPN.DNS {
			dns = append(dns, d.String())
		}
	}
	fmt.Fprintf(&n, "    nameservers:\n      addresses: [%s]\n", strings.Join(dns, ", "))

	arts := []Artifact{
		{Path: "cloud-init/manager/meta-data", Data: []byte(meta)},
		{Path: "cloud-init/manager/network-config", Data: []byte(n.String())},
		{Path: "cloud-init/manager/user-data", Data: []byte(u.String()), Secret: git != nil},
	}
	if git != nil {
		arts = append(arts,
			Artifact{Path: "git/manager/authorized_keys", Data: []byte(authorized)},
			Artifact{Path: "git/manager/ssh_host_ed25519_key", Data: bytes.Clone(git.HostKey), Secret: true})
	}
	return arts, nil
}

// installScript downloads each tool, checks it against the project's
// published SHA-256 sums and installs it in /usr/local/bin. It is safe to
// run again: a tool already at its version is skipped.
func installScript(tools []Tool) string {
	var s strings.Builder
	s.WriteString(`#!/bin/sh
# Installs the admin tools at the versions pinned in lab.yaml.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch NAME URL SUMS_URL SUMS_FILE ARCHIVE
fetch() {
  name=$1 url=$2 sums=$3 file=$4 archive=$5
  marker=/usr/local/share/homelab/$name.url
  if [ -x "/usr/local/bin/$name" ] && [ "$(cat "$marker" 2>/dev/null)" = "$url" ]; then
    echo "$name: already installed"
    return
  fi
  curl -fsSL --retry 5 -o "$tmp/$name.download" "$url"
  curl -fsSL --retry 5 -o "$tmp/$name.sums" "$sums"
  if [ -n "$file" ]; then
    want=$(awk -v f="$file" '{n = $2; sub(/^[*]/, "", n); sub(/.*[/]/, "", n); if (n == f) print $1}' "$tmp/$name.sums")
  else
    want=$(awk '{print $1; exit}' "$tmp/$name.sums")
  fi
  got=$(sha256sum "$tmp/$name.download" | awk '{print $1}')
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    echo "$name: checksum mismatch for $url" >&2
    exit 1
  fi
  if [ "$archive" = yes ]; then
    tar -xzf "$tmp/$name.download" -C "$tmp" "$name"
    install -m 0755 "$tmp/$name" "/usr/local/bin/$name"
  else
    install -m 0755 "$tmp/$name.download" "/usr/local/bin/$name"
  fi
  mkdir -p /usr/local/share/homelab
  echo "$url" > "$marker"
  echo "$name: installed from $url"
}

`)
	for _, t := range tools {
		archive := "no"
		if t.Archive {
			archive = "yes"
		}
		fmt.Fprintf(&s, "fetch %s %s %s %q %s\n", t.Name, t.URL, t.SumsURL, t.SumsFile, archive)
	}
	return s.String()
}

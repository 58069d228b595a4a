package render

import (
	"fmt"
	"strconv"
	"strings"

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

// renderCloudInit writes the manager VM's NoCloud seed: user-data (user,
// SSH keys, tools), meta-data and network-config (static address on the
// admin network). None of it is secret: SSH keys are public keys, and the
// talosconfig and kubeconfig are copied over SSH later, never through
// cloud-init (whose seed is readable on the Proxmox storage).
func renderCloudInit(lab *spec.Lab, _ *secrets.Bundle) ([]Artifact, error) {
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

	var u strings.Builder
	u.WriteString("#cloud-config\n")
	u.WriteString(header(lab, "manager VM cloud-init user-data"))
	u.WriteString("# Holds no secret: public SSH keys and public download URLs only.\n")
	fmt.Fprintf(&u, "hostname: %s\nfqdn: %s\nmanage_etc_hosts: true\n", m.Name, m.Name)
	u.WriteString("users:\n")
	fmt.Fprintf(&u, "  - name: %s\n", yamlString(mg.User))
	u.WriteString("    groups: [sudo]\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n")
	if len(mg.SSHKeys) > 0 {
		u.WriteString("    ssh_authorized_keys:\n")
		for _, k := range mg.SSHKeys {
			fmt.Fprintf(&u, "      - %s\n", yamlString(strings.TrimSpace(k)))
		}
	}
	u.WriteString("ssh_pwauth: false\ndisable_root: true\n")
	u.WriteString("package_update: true\npackages:\n")
	for _, p := range []string{"bash-completion", "ca-certificates", "curl", "git", "qemu-guest-agent"} {
		fmt.Fprintf(&u, "  - %s\n", p)
	}
	u.WriteString("write_files:\n  - path: /usr/local/sbin/homelab-install-tools\n    permissions: \"0755\"\n    content: |\n")
	for _, line := range strings.Split(installScript(ManagerTools(mg.Tools)), "\n") {
		if line == "" {
			u.WriteString("\n")
			continue
		}
		u.WriteString("      " + line + "\n")
	}
	u.WriteString("runcmd:\n  - [systemctl, enable, --now, qemu-guest-agent]\n  - [/usr/local/sbin/homelab-install-tools]\n")

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

	return []Artifact{
		{Path: "cloud-init/manager/meta-data", Data: []byte(meta)},
		{Path: "cloud-init/manager/network-config", Data: []byte(n.String())},
		{Path: "cloud-init/manager/user-data", Data: []byte(u.String())},
	}, nil
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

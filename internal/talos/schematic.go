package talos

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/homelab-dev/homelab/internal/spec"
)

// FactoryHost is the Sidero Labs Image Factory.
const FactoryHost = "factory.talos.dev"

// extensionName is what an official extension name looks like
// (siderolabs/qemu-guest-agent). It keeps every name a plain YAML scalar,
// so the schematic can be written without a YAML library and still match
// the factory's encoding byte for byte.
var extensionName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._/-]*$`)

// Schematic returns the Image Factory schematic for the lab's system
// extensions and its ID.
//
// The factory identifies a schematic by the SHA-256 (hex) of its canonical
// YAML: the schematic structure marshalled by gopkg.in/yaml.v3 with its
// default four-space indentation and empty fields left out. This function
// writes that same encoding, so the ID here is the ID the factory returns
// when the YAML is posted to https://factory.talos.dev/schematics.
// Extensions are sorted and deduplicated so that the ID does not depend on
// their order in lab.yaml.
func Schematic(lab *spec.Lab) (yaml []byte, id string, err error) {
	exts := slices.Clone(lab.Cluster.Extensions)
	slices.Sort(exts)
	exts = slices.Compact(exts)
	for _, e := range exts {
		if !extensionName.MatchString(e) {
			return nil, "", fmt.Errorf("building the image schematic: cluster.extensions: %q is not an extension name like siderolabs/qemu-guest-agent", e)
		}
	}
	var b bytes.Buffer
	if len(exts) == 0 {
		b.WriteString("customization: {}\n")
	} else {
		b.WriteString("customization:\n    systemExtensions:\n        officialExtensions:\n")
		for _, e := range exts {
			fmt.Fprintf(&b, "            - %s\n", e)
		}
	}
	sum := sha256.Sum256(b.Bytes())
	return b.Bytes(), hex.EncodeToString(sum[:]), nil
}

// InstallerImage is the factory installer image for the schematic and the
// lab's Talos version: factory.talos.dev/installer/<id>:<version>.
func InstallerImage(lab *spec.Lab, schematicID string) string {
	return fmt.Sprintf("%s/installer/%s:%s", FactoryHost, schematicID, talosVersion(lab))
}

// NocloudImageURL is the factory's nocloud disk image (raw, xz compressed)
// for the schematic and the lab's Talos version, the boot disk of Proxmox
// VMs configured through cloud-init.
func NocloudImageURL(lab *spec.Lab, schematicID string) string {
	return fmt.Sprintf("https://%s/image/%s/%s/nocloud-amd64.raw.xz", FactoryHost, schematicID, talosVersion(lab))
}

// talosVersion is the lab's Talos version with its leading v (v1.13.9), as
// image tags and factory paths spell it.
func talosVersion(lab *spec.Lab) string {
	return "v" + strings.TrimPrefix(lab.Cluster.TalosVersion, "v")
}

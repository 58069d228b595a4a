package secrets

import (
	"bytes"
	stdx509 "crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/siderolabs/talos/pkg/machinery/config"
	talossecrets "github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/role"

	"github.com/homelab-dev/homelab/internal/spec"
)

// adminRenewBefore is how long before expiry the talosconfig's admin
// certificate is renewed.
const adminRenewBefore = 30 * 24 * time.Hour

// LoadOrCreate decrypts the lab's bundle, creating it on first use: the
// Talos secrets bundle for the lab's Talos version, the talosconfig admin
// certificate, the WireGuard server key and one key pair per VPN peer that
// brought no public key. Keys missing for peers added to the spec later are
// generated and saved; nothing existing is regenerated (only the admin
// certificate is renewed when it nears expiry). changed reports whether the
// bundle was written.
func (s *Store) LoadOrCreate(lab *spec.Lab) (b *Bundle, changed bool, err error) {
	b, err = s.Load()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b = &Bundle{}
	case err != nil:
		return nil, false, err
	}
	changed, err = b.Fill(lab)
	if err != nil {
		return nil, false, err
	}
	if changed {
		if err := s.Save(b); err != nil {
			return nil, false, err
		}
	}
	return b, changed, nil
}

// Load decrypts the bundle. It returns an error matching fs.ErrNotExist
// when the lab has no secrets yet.
func (s *Store) Load() (*Bundle, error) {
	data, err := s.get(bundleName)
	if err != nil {
		return nil, err
	}
	var b Bundle
	if err := yaml.Unmarshal(data, &b); err != nil {
		// yaml errors may quote the document: never pass them on.
		return nil, fmt.Errorf("decoding %s: the decrypted secrets are not a valid bundle", s.path(bundleName))
	}
	if b.Talos != nil {
		b.Talos.Clock = talossecrets.NewClock()
	}
	return &b, nil
}

// Save encrypts the bundle into secrets.age.
func (s *Store) Save(b *Bundle) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(b); err != nil {
		return fmt.Errorf("encoding the secrets bundle: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encoding the secrets bundle: %w", err)
	}
	return s.put(bundleName, buf.Bytes())
}

// Fill generates whatever the lab needs and the bundle lacks, never
// replacing an existing key. It reports whether it changed the bundle.
func (b *Bundle) Fill(lab *spec.Lab) (changed bool, err error) {
	if b.Talos == nil {
		contract, err := config.ParseContractFromVersion(lab.Cluster.TalosVersion)
		if err != nil {
			return false, fmt.Errorf("creating talos secrets: cluster.talosVersion %q: %w", lab.Cluster.TalosVersion, err)
		}
		b.Talos, err = talossecrets.NewBundle(talossecrets.NewClock(), contract)
		if err != nil {
			return false, fmt.Errorf("creating talos secrets: %w", err)
		}
		b.TalosAdmin = nil // signed by another CA
		changed = true
	}
	if b.Talos.Clock == nil {
		b.Talos.Clock = talossecrets.NewClock()
	}
	if adminNeedsRenewal(b, time.Now()) {
		b.TalosAdmin, err = b.Talos.GenerateTalosAPIClientCertificate(role.MakeSet(role.Admin))
		if err != nil {
			return false, fmt.Errorf("creating the talos admin certificate: %w", err)
		}
		changed = true
	}
	if b.WireGuard.Server.Private == "" {
		b.WireGuard.Server, err = NewWireGuardKey()
		if err != nil {
			return false, err
		}
		changed = true
	}
	for _, p := range lab.VPN.Peers {
		if p.PublicKey != "" {
			continue
		}
		if _, ok := b.WireGuard.Peers[p.Name]; ok {
			continue
		}
		kp, err := NewWireGuardKey()
		if err != nil {
			return false, err
		}
		if b.WireGuard.Peers == nil {
			b.WireGuard.Peers = map[string]KeyPair{}
		}
		b.WireGuard.Peers[p.Name] = kp
		changed = true
	}
	return changed, nil
}

// adminNeedsRenewal reports whether the admin certificate is missing,
// unreadable or expires within adminRenewBefore.
func adminNeedsRenewal(b *Bundle, now time.Time) bool {
	if b.TalosAdmin == nil {
		return true
	}
	block, _ := pem.Decode(b.TalosAdmin.Crt)
	if block == nil {
		return true
	}
	crt, err := stdx509.ParseCertificate(block.Bytes)
	if err != nil {
		return true
	}
	return now.Add(adminRenewBefore).After(crt.NotAfter)
}

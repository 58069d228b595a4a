package pveapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// TLSOptions say how the API's certificate is verified. With neither
// CAFile nor Fingerprint, the system roots are used.
type TLSOptions struct {
	// CAFile is a PEM file of CA certificates to trust instead of the
	// system roots (the Proxmox cluster CA, /etc/pve/pve-root-ca.pem).
	CAFile string
	// Fingerprint pins the SHA-256 fingerprint of the server's leaf
	// certificate (AA:BB:... or hex); the chain is then not checked.
	Fingerprint string
	// Insecure skips every check. Only when the user asked for it.
	Insecure bool
}

// FingerprintError is a server whose certificate is not the pinned one.
type FingerprintError struct {
	Got, Want string
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("the API's TLS certificate has fingerprint %s, but the lab pins %s", e.Got, e.Want)
}

// Hint tells how to check the fingerprint.
func (e *FingerprintError) Hint() string {
	return "if the host's certificate was renewed, compare it on the host with `pvenode cert info` and update host.proxmox.fingerprint; otherwise someone may be intercepting the connection"
}

// Fingerprint formats the SHA-256 of a DER certificate as AA:BB:....
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// NormalizeFingerprint turns aa:bb.., AA-BB.. or plain hex into AA:BB:...
// It fails unless the result is a SHA-256 (32 bytes).
func NormalizeFingerprint(s string) (string, error) {
	h := strings.NewReplacer(":", "", "-", "", " ", "").Replace(strings.TrimSpace(s))
	raw, err := hex.DecodeString(h)
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q is not a SHA-256 fingerprint (32 hex bytes, AA:BB:...)", s)
	}
	h = strings.ToUpper(h)
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String(), nil
}

// TLSConfig builds the client TLS configuration for o.
func TLSConfig(o TLSOptions) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case o.Insecure:
		cfg.InsecureSkipVerify = true
	case o.Fingerprint != "":
		want, err := NormalizeFingerprint(o.Fingerprint)
		if err != nil {
			return nil, err
		}
		// The chain of a self-signed Proxmox certificate cannot be
		// verified; the pinned leaf is checked instead, on every
		// connection (resumed ones too).
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("the API presented no TLS certificate")
			}
			got := Fingerprint(cs.PeerCertificates[0].Raw)
			if got != want {
				return &FingerprintError{Got: got, Want: want}
			}
			return nil
		}
	case o.CAFile != "":
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the Proxmox CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(bytes.TrimSpace(pem)) {
			return nil, fmt.Errorf("reading the Proxmox CA file %s: no PEM certificate in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

package standin

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// certLifetime is how long certificates issued here stay valid.
const certLifetime = 365 * 24 * time.Hour

// File names of the TLS material in a stand-in's certificate folder
// (LoadCerts, Certs.Write). The kube files are only read on control
// planes. The CA keys are optional: with one, the node issues its own
// server certificate when none is given, and kube-ca.key lets it hand out
// kubeconfigs.
const (
	FileTalosCA    = "talos-ca.crt"
	FileTalosCAKey = "talos-ca.key"
	FileTalosCert  = "talos.crt"
	FileTalosKey   = "talos.key"
	FileKubeCA     = "kube-ca.crt"
	FileKubeCAKey  = "kube-ca.key"
	FileKubeCert   = "kube.crt"
	FileKubeKey    = "kube.key"
)

// Certs is a node's TLS material, all PEM. The Talos CA verifies client
// certificates on the Talos API (the talosconfig's); the Kubernetes CA
// verifies them on the Kubernetes API. A missing server certificate is
// issued at start from the CA and its key, or, when no CA is given
// either, from an ephemeral self-signed CA (like a Talos node in
// maintenance mode).
type Certs struct {
	TalosCA, TalosCAKey, TalosCert, TalosKey []byte
	KubeCA, KubeCAKey, KubeCert, KubeKey     []byte
}

// LoadCerts reads the files named File* from dir; missing files are left
// empty.
func LoadCerts(dir string) (Certs, error) {
	var c Certs
	for name, dst := range c.files() {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Certs{}, fmt.Errorf("reading stand-in certificates: %w", err)
		}
		*dst = data
	}
	return c, nil
}

// Write stores the non-empty fields into dir under the File* names, 0600.
func (c *Certs) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing stand-in certificates: %w", err)
	}
	for name, src := range c.files() {
		if len(*src) == 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), *src, 0o600); err != nil {
			return fmt.Errorf("writing stand-in certificates: %w", err)
		}
	}
	return nil
}

func (c *Certs) files() map[string]*[]byte {
	return map[string]*[]byte{
		FileTalosCA: &c.TalosCA, FileTalosCAKey: &c.TalosCAKey, FileTalosCert: &c.TalosCert, FileTalosKey: &c.TalosKey,
		FileKubeCA: &c.KubeCA, FileKubeCAKey: &c.KubeCAKey, FileKubeCert: &c.KubeCert, FileKubeKey: &c.KubeKey,
	}
}

// NewCA makes a self-signed ECDSA P-256 CA named cn, PEM encoded.
func NewCA(cn string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"homelab stand-in"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing CA: %w", err)
	}
	return encodeCert(der), encodeKey(key), nil
}

// IssueCerts issues a server certificate for names and ips, signed by the
// CA (the CA key may be Ed25519, ECDSA or RSA, in PKCS#8, SEC 1 or PKCS#1
// PEM, as the Talos secrets bundle holds them). The new key is ECDSA P-256.
func IssueCerts(caCertPEM, caKeyPEM []byte, names []string, ips []netip.Addr) (certPEM, keyPEM []byte, err error) {
	cn := "homelab-standin"
	if len(names) > 0 {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"homelab stand-in"}},
		DNSNames:    names,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	return issue(caCertPEM, caKeyPEM, tmpl)
}

// IssueClientCert issues a client certificate with common name cn and
// organizations orgs (for example "system:masters" for a Kubernetes admin,
// "os:admin" for a Talos admin), signed by the CA.
func IssueClientCert(caCertPEM, caKeyPEM []byte, cn string, orgs ...string) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(caCertPEM, caKeyPEM, tmpl)
}

func issue(caCertPEM, caKeyPEM []byte, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	ca, err := parseCert(caCertPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing certificate: CA: %w", err)
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing certificate: CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing certificate: %w", err)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(certLifetime)
	if ca.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing certificate: %w", err)
	}
	return encodeCert(der), encodeKey(key), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err) // only fails for unknown key types
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// parseKey accepts any PEM private key label: Talos labels its Ed25519
// keys "ED25519 PRIVATE KEY" around PKCS#8 bytes.
func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		switch k := k.(type) {
		case ed25519.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		}
		return nil, errors.New("unsupported private key type")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	// Never include the key or parser details that could quote it.
	return nil, errors.New("unreadable private key (want PKCS#8, SEC 1 or PKCS#1 PEM)")
}

// serverTLS builds a TLS config serving certPEM/keyPEM that verifies
// client certificates against caPEM with the given policy.
func serverTLS(certPEM, keyPEM, caPEM []byte, auth tls.ClientAuthType) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("loading CA certificate: no PEM certificate")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   auth,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

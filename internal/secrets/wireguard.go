package secrets

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// NewWireGuardKey generates a WireGuard key pair (Curve25519, clamped as
// wg genkey does), both halves base64 encoded like wg(8) prints them.
func NewWireGuardKey() (KeyPair, error) {
	var priv [curve25519.ScalarSize]byte
	if _, err := rand.Read(priv[:]); err != nil {
		return KeyPair{}, fmt.Errorf("generating wireguard key: %w", err)
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return KeyPair{}, fmt.Errorf("deriving wireguard public key: %w", err)
	}
	return KeyPair{
		Private: base64.StdEncoding.EncodeToString(priv[:]),
		Public:  base64.StdEncoding.EncodeToString(pub),
	}, nil
}

// errBadKey never carries the key itself: it may be a private key.
var errBadKey = errors.New("wireguard key must be 32 bytes in base64 (as wg genkey prints it)")

// PublicKey derives the base64 public key of a base64 WireGuard private key.
func PublicKey(private string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(private)
	if err != nil || len(raw) != curve25519.ScalarSize {
		return "", fmt.Errorf("deriving wireguard public key: %w", errBadKey)
	}
	pub, err := curve25519.X25519(raw, curve25519.Basepoint)
	if err != nil {
		return "", fmt.Errorf("deriving wireguard public key: %w", errBadKey)
	}
	return base64.StdEncoding.EncodeToString(pub), nil
}

// ValidKey reports whether s is a well-formed base64 WireGuard key
// (public or private), without saying anything about its value.
func ValidKey(s string) bool {
	raw, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(raw) == curve25519.ScalarSize
}

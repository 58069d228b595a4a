package vpn

import (
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// GenerateKey makes a WireGuard key pair (Curve25519, clamped as wg genkey
// does).
func GenerateKey() (PrivateKey, Key, error) {
	var priv PrivateKey
	if _, err := rand.Read(priv[:]); err != nil {
		return PrivateKey{}, Key{}, fmt.Errorf("generating wireguard key: %w", err)
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	return priv, priv.Public(), nil
}

// Public derives the public key.
func (k PrivateKey) Public() Key {
	pub, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, which a clamped key cannot give.
		return Key{}
	}
	var out Key
	copy(out[:], pub)
	return out
}

package sops

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ivSize is sops' GCM nonce size (not the usual 12 bytes).
const ivSize = 32

// encryptValue seals one value as an ENC[...] string. typ is the sops
// type name (str, int, float, bool) of the plaintext.
func encryptValue(plain []byte, typ string, key []byte, aad string) (string, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", fmt.Errorf("preparing AES: %w", err)
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, ivSize)
	if err != nil {
		return "", fmt.Errorf("preparing AES-GCM: %w", err)
	}
	iv := make([]byte, ivSize)
	if _, err := rand.Read(iv); err != nil {
		return "", fmt.Errorf("generating an IV: %w", err)
	}
	sealed := gcm.Seal(nil, iv, plain, []byte(aad))
	n := len(sealed) - gcm.Overhead()
	b64 := base64.StdEncoding.EncodeToString
	return "ENC[AES256_GCM,data:" + b64(sealed[:n]) + ",iv:" + b64(iv) + ",tag:" + b64(sealed[n:]) + ",type:" + typ + "]", nil
}

// sealed is a parsed ENC[...] value.
type sealed struct {
	data, iv, tag []byte
	typ           string
}

var errNotSealed = errors.New("not a sops ENC[AES256_GCM,...] value")

// parseValue reads an ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]
// string. Its errors never quote the input.
func parseValue(s string) (sealed, error) {
	inner, ok := strings.CutPrefix(s, "ENC[AES256_GCM,")
	if !ok {
		return sealed{}, errNotSealed
	}
	inner, ok = strings.CutSuffix(inner, "]")
	if !ok {
		return sealed{}, errNotSealed
	}
	parts := strings.Split(inner, ",")
	if len(parts) != 4 {
		return sealed{}, errNotSealed
	}
	var v sealed
	for i, name := range []string{"data", "iv", "tag", "type"} {
		field, ok := strings.CutPrefix(parts[i], name+":")
		if !ok {
			return sealed{}, errNotSealed
		}
		if name == "type" {
			v.typ = field
			continue
		}
		b, err := base64.StdEncoding.DecodeString(field)
		if err != nil {
			return sealed{}, fmt.Errorf("the %s of a sops value is not base64", name)
		}
		switch name {
		case "data":
			v.data = b
		case "iv":
			v.iv = b
		case "tag":
			v.tag = b
		}
	}
	switch v.typ {
	case "str", "int", "int64", "float", "bool", "bytes", "comment":
	default:
		return sealed{}, errors.New("a sops value has an unknown type")
	}
	if len(v.iv) == 0 || len(v.tag) != 16 {
		return sealed{}, errors.New("a sops value has an IV or tag of the wrong size")
	}
	return v, nil
}

var errAuth = errors.New("AES-GCM authentication failed (wrong data key, or the value or its key path was changed)")

// open decrypts a parsed value.
func (v sealed) open(key []byte, aad string) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("preparing AES: %w", err)
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(v.iv))
	if err != nil {
		return nil, fmt.Errorf("preparing AES-GCM: %w", err)
	}
	ct := make([]byte, 0, len(v.data)+len(v.tag))
	ct = append(append(ct, v.data...), v.tag...)
	plain, err := gcm.Open(nil, v.iv, ct, []byte(aad))
	if err != nil {
		return nil, errAuth
	}
	return plain, nil
}

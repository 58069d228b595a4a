package secrets

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// TestPublicKeyVector uses the X25519 test vector of RFC 7748 section 6.1.
func TestPublicKeyVector(t *testing.T) {
	priv, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	want, _ := hex.DecodeString("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	got, err := PublicKey(base64.StdEncoding.EncodeToString(priv))
	if err != nil {
		t.Fatal(err)
	}
	if got != base64.StdEncoding.EncodeToString(want) {
		t.Errorf("PublicKey(RFC 7748 Alice) = %s, want %s", got, base64.StdEncoding.EncodeToString(want))
	}
}

func TestNewWireGuardKey(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		kp, err := NewWireGuardKey()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(kp.Private)
		if err != nil || len(raw) != 32 {
			t.Fatalf("private key is not 32 bytes of base64")
		}
		if raw[0]&7 != 0 || raw[31]&128 != 0 || raw[31]&64 == 0 {
			t.Errorf("private key is not clamped as wg genkey clamps")
		}
		pub, err := PublicKey(kp.Private)
		if err != nil || pub != kp.Public {
			t.Errorf("Public does not match PublicKey(Private) (err %v)", err)
		}
		if seen[kp.Private] {
			t.Errorf("NewWireGuardKey repeated a key")
		}
		seen[kp.Private] = true
		if len(kp.Private) != 44 || len(kp.Public) != 44 {
			t.Errorf("keys are not 44 base64 characters like wg(8) prints")
		}
	}
}

func TestPublicKeyRejects(t *testing.T) {
	for _, in := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 31)), base64.StdEncoding.EncodeToString(make([]byte, 33))} {
		_, err := PublicKey(in)
		if err == nil {
			t.Errorf("PublicKey(%q) succeeded, want an error", in)
			continue
		}
		if in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("PublicKey error quotes its input")
		}
	}
	if ValidKey("short") || !ValidKey(base64.StdEncoding.EncodeToString(make([]byte, 32))) {
		t.Errorf("ValidKey misjudges key length")
	}
}

// FuzzPublicKey feeds arbitrary text (a user may paste any key) and checks
// that PublicKey never panics and never echoes its input in errors.
func FuzzPublicKey(f *testing.F) {
	f.Add("d2qwsqE4dvGSbf5vjkpgTzvGT6t8nQhXqfYOTr5h1Ws=")
	f.Add("")
	f.Add("====")
	f.Fuzz(func(t *testing.T, in string) {
		pub, err := PublicKey(in)
		if err != nil {
			if len(in) >= 8 && strings.Contains(err.Error(), in) {
				t.Errorf("error quotes the input")
			}
			return
		}
		if !ValidKey(pub) {
			t.Errorf("PublicKey returned a malformed key")
		}
	})
}

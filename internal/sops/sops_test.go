package sops

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"go.yaml.in/yaml/v4"
)

func identities(t testing.TB, file string) []age.Identity {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestKnownAnswer decrypts files written by the real sops (3.9.0 and
// 3.10.2), taken from Flux's kustomize-controller test data (see
// testdata/README.md): data key, values, AAD and MAC as sops made them.
func TestKnownAnswer(t *testing.T) {
	tests := []struct {
		file, key, want string
	}{
		{"flux-age-v3.9.0.sops.yaml", "flux-age.agekey",
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: age\nstringData:\n  key: value\n"},
		{"flux-global-v3.10.2.sops.yaml", "flux-global.agekey",
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: global-age-secret\n  namespace: default\ntype: Opaque\nstringData:\n  key: global-value\n"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decrypt(data, identities(t, tt.key)...)
			if err != nil {
				t.Fatalf("Decrypt() = %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Decrypt() =\n%s\nwant\n%s", got, tt.want)
			}
			m, err := Inspect(data)
			if err != nil {
				t.Fatalf("Inspect() = %v", err)
			}
			if m.EncryptedRegex != KubernetesRegex || len(m.Age) != 1 || m.LastModified.IsZero() {
				t.Errorf("Inspect() = %+v", m)
			}
		})
	}
}

const secret = `apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: apps
  labels:
    tier: backend
type: Opaque
stringData:
  password: "s3cr3t-Passw0rd"
  username: admin
  empty: ""
  multiline: |
    line one
    line two
  port: 5432
  ratio: 1.5
  enabled: true
  answer: "yes"
  nested:
    - item-one
    - deeper: item-two
data:
  token: dG9rZW4tdmFsdWU=
`

// plaintexts are the values of secret that must not appear encrypted.
var plaintexts = []string{"s3cr3t-Passw0rd", "line one", "5432", "item-one", "item-two", "dG9rZW4tdmFsdWU="}

func newKey(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func encrypt(t testing.TB, plain string, recipients ...*age.X25519Identity) []byte {
	t.Helper()
	var rs []string
	for _, id := range recipients {
		rs = append(rs, id.Recipient().String())
	}
	out, err := Encrypt([]byte(plain), Options{Recipients: rs, EncryptedRegex: KubernetesRegex, Now: time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatalf("Encrypt() = %v", err)
	}
	return out
}

// sameYAML compares two YAML streams as values.
func sameYAML(t *testing.T, got, want []byte) {
	t.Helper()
	decode := func(b []byte) []any {
		var docs []any
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var v any
			if err := dec.Decode(&v); err != nil {
				break
			}
			docs = append(docs, v)
		}
		return docs
	}
	if g, w := decode(got), decode(want); !reflect.DeepEqual(g, w) {
		t.Errorf("decrypted:\n%s\nwant the same values as:\n%s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	a, b := newKey(t), newKey(t)
	tests := []struct{ name, plain string }{
		{"secret", secret},
		{"two documents", secret + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: two}\nstringData: {other: value-two}\n"},
		{"no values", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"},
		{"comments", "# head\nstringData:\n  # the old one was item-one\n  password: s3cr3t-Passw0rd # was item-two\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := encrypt(t, tt.plain, a, b)
			for _, p := range plaintexts {
				if bytes.Contains(enc, []byte(p)) {
					t.Errorf("the encrypted file holds %q in the clear", p)
				}
			}
			for _, clear := range []string{"kind: Secret", "name: db", "tier: backend", "password: ENC[AES256_GCM,data:", "empty: \"\""} {
				if strings.Contains(tt.plain, "name: db") && !bytes.Contains(enc, []byte(clear)) {
					t.Errorf("the encrypted file lacks %q:\n%s", clear, enc)
				}
			}
			for _, id := range []age.Identity{a, b} {
				got, err := Decrypt(enc, id)
				if err != nil {
					t.Fatalf("Decrypt() = %v", err)
				}
				sameYAML(t, got, []byte(tt.plain))
				if strings.Contains(tt.plain, "answer:") && !bytes.Contains(got, []byte(`answer: "yes"`)) {
					t.Errorf("a string a YAML 1.1 reader takes for a boolean is not quoted:\n%s", got)
				}
			}
		})
	}
}

// TestFormat checks the sops key as sops 3.10 writes it, and the types of
// encrypted values.
func TestFormat(t *testing.T) {
	id := newKey(t)
	enc := encrypt(t, secret, id)
	var doc struct {
		StringData map[string]any `yaml:"stringData"`
		Sops       yaml.Node      `yaml:"sops"`
	}
	if err := yaml.Unmarshal(enc, &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := 0; i < len(doc.Sops.Content); i += 2 {
		keys = append(keys, doc.Sops.Content[i].Value)
	}
	if got, want := strings.Join(keys, " "), "age lastmodified mac encrypted_regex version"; got != want {
		t.Errorf("sops keys = %s, want %s", got, want)
	}
	m, err := Inspect(enc)
	if err != nil {
		t.Fatal(err)
	}
	if m.LastModified != time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC) || m.Version != FormatVersion || m.EncryptedRegex != KubernetesRegex {
		t.Errorf("metadata = %+v", m)
	}
	if got := m.Recipients(); len(got) != 1 || got[0] != id.Recipient().String() {
		t.Errorf("recipients = %v", got)
	}
	if !strings.HasPrefix(m.Age[0].Enc, "-----BEGIN AGE ENCRYPTED FILE-----\n") || !strings.HasSuffix(m.Age[0].Enc, "-----END AGE ENCRYPTED FILE-----\n") {
		t.Errorf("the data key is not armored age:\n%s", m.Age[0].Enc)
	}
	for key, typ := range map[string]string{"password": "str", "port": "int", "ratio": "float", "enabled": "bool"} {
		v, _ := doc.StringData[key].(string)
		if !strings.HasPrefix(v, "ENC[AES256_GCM,data:") || !strings.HasSuffix(v, ",type:"+typ+"]") {
			t.Errorf("stringData.%s = %.40s..., want an ENC value of type %s", key, v, typ)
		}
	}
	// Each run draws a new data key and IVs.
	if again := encrypt(t, secret, id); bytes.Equal(again, enc) {
		t.Error("two encryptions gave the same bytes")
	}
}

// mustNotLeak fails when an error quotes a secret value or key.
func mustNotLeak(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range append(secrets, plaintexts...) {
		if strings.Contains(err.Error(), s) {
			t.Errorf("the error quotes a secret: %v", err)
		}
	}
}

func TestTamper(t *testing.T) {
	id := newKey(t)
	enc := string(encrypt(t, secret, id))
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(enc), &doc); err != nil {
		t.Fatal(err)
	}
	sd := doc["stringData"].(map[string]any)
	password, username := sd["password"].(string), sd["username"].(string)
	tests := []struct {
		name    string
		edit    func(string) string
		wantMAC bool
		want    string
	}{
		{"a value in the clear changed", func(s string) string { return strings.Replace(s, "name: db", "name: dc", 1) }, true, ""},
		{"a label added", func(s string) string { return strings.Replace(s, "tier: backend", "tier: backend\n    extra: x", 1) }, true, ""},
		{"an encrypted value removed", func(s string) string { return strings.Replace(s, "    password: "+password+"\n", "", 1) }, true, ""},
		{"two encrypted values swapped", func(s string) string {
			s = strings.Replace(s, password, "@@", 1)
			s = strings.Replace(s, username, password, 1)
			return strings.Replace(s, "@@", username, 1)
		}, false, "stringData.password: AES-GCM authentication failed"},
		{"a ciphertext changed", func(s string) string {
			i := strings.Index(s, password) + len("ENC[AES256_GCM,data:")
			c := byte('A')
			if s[i] == 'A' {
				c = 'B'
			}
			return s[:i] + string(c) + s[i+1:]
		}, false, "stringData.password: AES-GCM authentication failed"},
		{"lastmodified changed", func(s string) string {
			return strings.Replace(s, `lastmodified: "2026-11-23T22:00:00Z"`, `lastmodified: "2026-11-23T22:00:01Z"`, 1)
		}, false, "sops.mac: AES-GCM authentication failed"},
		{"a value decrypted by hand", func(s string) string {
			return strings.Replace(s, password, "s3cr3t-Passw0rd", 1)
		}, false, "stringData.password: not a sops ENC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edited := tt.edit(enc)
			if edited == enc {
				t.Fatal("the edit changed nothing")
			}
			_, err := Decrypt([]byte(edited), id)
			switch {
			case err == nil:
				t.Fatal("Decrypt() of a tampered file succeeded")
			case tt.wantMAC && !errors.Is(err, ErrMAC):
				t.Errorf("Decrypt() = %v, want ErrMAC", err)
			case !tt.wantMAC && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Decrypt() = %v, want %q", err, tt.want)
			}
			mustNotLeak(t, err, id.String())
		})
	}
}

func TestWrongKey(t *testing.T) {
	right, wrong := newKey(t), newKey(t)
	enc := encrypt(t, secret, right)
	_, err := Decrypt(enc, wrong)
	if err == nil || !strings.Contains(err.Error(), "no identity given opens the data key") || !strings.Contains(err.Error(), right.Recipient().String()) {
		t.Errorf("Decrypt() with the wrong key = %v, want an error naming the file's recipient", err)
	}
	mustNotLeak(t, err, right.String(), wrong.String())
	if _, err := Decrypt(enc); err == nil || !strings.Contains(err.Error(), "no age identity") {
		t.Errorf("Decrypt() without identities = %v", err)
	}
}

func TestRejects(t *testing.T) {
	id := newKey(t)
	enc := string(encrypt(t, secret, id))
	meta := enc[strings.Index(enc, "sops:\n"):]
	tests := []struct{ name, file, want string }{
		{"not encrypted", secret, "no sops metadata"},
		{"not YAML", "a: [\n", "not YAML: syntax error"},
		{"a list document", "- a\n- b\n", "document 1 is not a mapping"},
		{"alias", "a: &x v\nb: *x\n" + meta, "YAML aliases are not supported"},
		{"two rules", strings.Replace(enc, "    version:", "    unencrypted_suffix: _x\n    version:", 1), "more than one of"},
		{"shamir", "a: b\nsops:\n  key_groups: [{age: []}, {age: []}]\n  lastmodified: '2026-01-01T00:00:00Z'\n", "Shamir"},
		{"pgp only", "a: b\nsops:\n  pgp: [{fp: X, enc: Y}]\n  lastmodified: '2026-01-01T00:00:00Z'\n", "only pgp"},
		{"bad time", strings.Replace(enc, `"2026-11-23T22:00:00Z"`, `"yesterday"`, 1), "lastmodified is not an RFC 3339 time"},
		{"bad regex", strings.Replace(enc, "encrypted_regex: ^(data|stringData)$", "encrypted_regex: ^(data", 1), "not a regular expression"},
		{"comment rules", strings.Replace(enc, "    version:", "    encrypted_comment_regex: x\n    version:", 1), "comment-based"},
		{"clear secret", strings.Replace(enc, "stringData:\n", "stringData:\n    leaked: s3cr3t-Passw0rd\n", 1), "stringData.leaked: not a sops ENC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decrypt([]byte(tt.file), id)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decrypt() = %v, want an error containing %q", err, tt.want)
			}
			mustNotLeak(t, err, id.String())
		})
	}
	// Inspect catches a value left in the clear without a key.
	clear := strings.Replace(enc, "stringData:\n", "stringData:\n    leaked: s3cr3t-Passw0rd\n", 1)
	if _, err := Inspect([]byte(clear)); err == nil || !strings.Contains(err.Error(), "stringData.leaked is not encrypted") {
		t.Errorf("Inspect() of a file with a clear value = %v", err)
	} else {
		mustNotLeak(t, err)
	}
	if _, err := Encrypt([]byte(secret), Options{}); err == nil {
		t.Error("Encrypt() without recipients succeeded")
	}
	if _, err := Encrypt([]byte(secret), Options{Recipients: []string{"ssh-ed25519 AAAA"}}); err == nil {
		t.Error("Encrypt() to a non-age recipient succeeded")
	}
	if _, err := Encrypt([]byte(enc), Options{Recipients: []string{id.Recipient().String()}}); err == nil || !strings.Contains(err.Error(), "already has a sops key") {
		t.Errorf("Encrypt() of an encrypted file = %v", err)
	}
}

// FuzzDecrypt feeds outside input (a file from the repository) to the
// parser and decryptor: no panic, and what decrypts is YAML that encrypts
// and decrypts again to the same values.
func FuzzDecrypt(f *testing.F) {
	id, err := age.ParseX25519Identity("AGE-SECRET-KEY-1RH87A5Z54ZGUR9S0AS3R6WHFSEFNPLYMAKF5Z2CEU7R06VRJ0A3Q7242AM")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"flux-age-v3.9.0.sops.yaml", "flux-global-v3.10.2.sops.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(encrypt(f, secret, id))
	f.Add([]byte("a: b\nsops:\n  age: [{recipient: x, enc: y}]\n  lastmodified: '2026-01-01T00:00:00Z'\n  mac: ENC[AES256_GCM,data:,iv:AA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		Inspect(data)
		out, err := Decrypt(data, id)
		if err != nil {
			return
		}
		enc, err := Encrypt(out, Options{Recipients: []string{id.Recipient().String()}})
		if err != nil {
			// Decrypt's output holds only what Encrypt takes, except
			// documents sops accepts and this package does not write.
			return
		}
		again, err := Decrypt(enc, id)
		if err != nil {
			t.Fatalf("a decrypted file, encrypted again, does not decrypt: %v", err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("round trip changed the values:\n%s\n---\n%s", out, again)
		}
	})
}

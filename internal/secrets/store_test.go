package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/homelab-dev/homelab/internal/spec"
)

func testLab(peers ...spec.Peer) *spec.Lab {
	return &spec.Lab{
		Name:    "lab",
		Cluster: spec.Cluster{TalosVersion: "v1.13.9", KubernetesVersion: "v1.36.3"},
		VPN:     spec.VPN{Peers: peers},
	}
}

// newStore opens a store in a fresh lab folder with a fresh identity
// outside it.
func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := OpenWithIdentity(filepath.Join(t.TempDir(), StateDirName), filepath.Join(t.TempDir(), "homelab", "identity.txt"))
	if err != nil {
		t.Fatalf("OpenWithIdentity: %v", err)
	}
	return s
}

var (
	sharedOnce  sync.Once
	sharedStore *Store
	sharedErr   error
)

// populated is a store whose bundle was created once for the tests that
// only read it (creating Talos keys takes a while).
func populated(t *testing.T) *Store {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "secrets-test-")
		if err != nil {
			sharedErr = err
			return
		}
		sharedStore, sharedErr = OpenWithIdentity(filepath.Join(dir, "lab", StateDirName), filepath.Join(dir, "config", "identity.txt"))
		if sharedErr != nil {
			return
		}
		_, _, sharedErr = sharedStore.LoadOrCreate(testLab(spec.Peer{Name: "laptop"}, spec.Peer{Name: "phone"}))
	})
	if sharedErr != nil {
		t.Fatalf("creating the shared store: %v", sharedErr)
	}
	return sharedStore
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedStore != nil {
		os.RemoveAll(filepath.Dir(filepath.Dir(sharedStore.Dir())))
	}
	os.Exit(code)
}

func TestLoadOrCreateRoundTrip(t *testing.T) {
	s := populated(t)
	lab := testLab(spec.Peer{Name: "laptop"}, spec.Peer{Name: "phone"})

	// A second store on the same folder and identity reads the same bundle
	// and writes nothing.
	s2, err := OpenWithIdentity(s.Dir(), s.IdentityFile())
	if err != nil {
		t.Fatal(err)
	}
	b1, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	b2, changed, err := s2.LoadOrCreate(lab)
	if err != nil {
		t.Fatal(err)
	}
	if changed {
		t.Errorf("LoadOrCreate on a complete bundle reported a change")
	}
	if err := b2.Talos.Validate(); err != nil {
		t.Errorf("the reloaded Talos bundle does not validate: %v", err)
	}
	if !bytes.Equal(b1.Talos.Certs.OS.Key, b2.Talos.Certs.OS.Key) || !bytes.Equal(b1.Talos.Certs.K8s.Crt, b2.Talos.Certs.K8s.Crt) ||
		b1.Talos.Secrets.BootstrapToken != b2.Talos.Secrets.BootstrapToken || b1.Talos.Cluster.Secret != b2.Talos.Cluster.Secret {
		t.Errorf("the Talos bundle changed across a reload")
	}
	if !bytes.Equal(b1.TalosAdmin.Crt, b2.TalosAdmin.Crt) {
		t.Errorf("the Talos admin certificate changed across a reload")
	}
	if b1.WireGuard.Server != b2.WireGuard.Server || len(b2.WireGuard.Peers) != 2 ||
		b1.WireGuard.Peers["laptop"] != b2.WireGuard.Peers["laptop"] || b1.WireGuard.Peers["phone"] != b2.WireGuard.Peers["phone"] {
		t.Errorf("the WireGuard keys changed across a reload")
	}
	for name, kp := range map[string]KeyPair{"server": b2.WireGuard.Server, "laptop": b2.WireGuard.Peers["laptop"]} {
		pub, err := PublicKey(kp.Private)
		if err != nil || pub != kp.Public {
			t.Errorf("%s: stored public key does not match its private key (err %v)", name, err)
		}
	}
}

func TestPermissions(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "lab", StateDirName)
	// A pre-existing, too open state folder is tightened on first write.
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(root, "config", "homelab", "identity.txt")
	s, err := OpenWithIdentity(state, idFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutFile("kubeconfig", []byte("apiVersion: v1\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Bundle{WireGuard: WireGuardKeys{Server: mustKey(t)}}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{
		idFile:                                 0o600,
		filepath.Dir(idFile):                   0o700 | fs.ModeDir,
		state:                                  0o700 | fs.ModeDir,
		filepath.Join(state, "secrets.age"):    0o600,
		filepath.Join(state, "kubeconfig.age"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeDir); got != want {
			t.Errorf("mode of %s = %v, want %v", path, got, want)
		}
	}
	// Atomic writes leave no temporary files behind.
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".age") {
			t.Errorf("stray file %s in the state folder", e.Name())
		}
	}
}

func TestIdentityTooOpen(t *testing.T) {
	s := newStore(t)
	if err := os.Chmod(s.IdentityFile(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenWithIdentity(s.Dir(), s.IdentityFile())
	var ie *IdentityError
	if !errors.As(err, &ie) || !strings.Contains(ie.Hint(), "chmod 600") {
		t.Errorf("OpenWithIdentity with a 0644 identity: error %v, want an IdentityError with a chmod hint", err)
	}
}

func TestIdentityInsideStateFolder(t *testing.T) {
	state := filepath.Join(t.TempDir(), StateDirName)
	_, err := OpenWithIdentity(state, filepath.Join(state, "identity.txt"))
	var ie *IdentityError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "inside the state folder") {
		t.Errorf("OpenWithIdentity with the identity in the state folder: %v, want an IdentityError", err)
	}
}

func TestWrongIdentity(t *testing.T) {
	s := populated(t)
	other := newStore(t).IdentityFile() // an existing, unrelated identity
	s2, err := OpenWithIdentity(s.Dir(), other)
	if err != nil {
		t.Fatalf("OpenWithIdentity with a new identity: %v", err)
	}
	_, _, err = s2.LoadOrCreate(testLab())
	if !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("LoadOrCreate with the wrong identity: error %v, want ErrWrongIdentity", err)
	}
	msg := err.Error()
	for _, want := range []string{"secrets.age", other, IdentityEnv} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	var ie *IdentityError
	if !errors.As(err, &ie) || ie.File != other || !strings.Contains(ie.Hint(), IdentityEnv) {
		t.Errorf("error is not an IdentityError naming %s with a %s hint", other, IdentityEnv)
	}
	checkNoSecrets(t, s, msg+ie.Hint())
	if _, err := s2.GetFile("kubeconfig"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile of an absent file: %v, want fs.ErrNotExist", err)
	}
}

func TestMissingIdentityWithSecrets(t *testing.T) {
	s := populated(t)
	missing := filepath.Join(t.TempDir(), "gone", "identity.txt")
	_, err := OpenWithIdentity(s.Dir(), missing)
	var ie *IdentityError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), missing) || ie.Hint() == "" {
		t.Fatalf("OpenWithIdentity with a missing identity and existing secrets: %v, want an IdentityError naming it", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a new identity was created although it could never decrypt the secrets")
	}
}

func TestAddedPeerGetsKey(t *testing.T) {
	s := newStore(t)
	b1, changed, err := s.LoadOrCreate(testLab(spec.Peer{Name: "laptop"}))
	if err != nil {
		t.Fatal(err)
	}
	if !changed {
		t.Errorf("first LoadOrCreate reported no change")
	}
	own := mustKey(t)
	b2, changed, err := s.LoadOrCreate(testLab(spec.Peer{Name: "laptop"}, spec.Peer{Name: "phone"}, spec.Peer{Name: "byok", PublicKey: own.Public}))
	if err != nil {
		t.Fatal(err)
	}
	if !changed {
		t.Errorf("LoadOrCreate with a new peer reported no change")
	}
	if b2.WireGuard.Server != b1.WireGuard.Server || b2.WireGuard.Peers["laptop"] != b1.WireGuard.Peers["laptop"] {
		t.Errorf("existing WireGuard keys were regenerated")
	}
	if !bytes.Equal(b2.Talos.Certs.OS.Key, b1.Talos.Certs.OS.Key) || !bytes.Equal(b2.TalosAdmin.Crt, b1.TalosAdmin.Crt) {
		t.Errorf("the Talos secrets were regenerated")
	}
	if kp, ok := b2.WireGuard.Peers["phone"]; !ok || !ValidKey(kp.Private) {
		t.Errorf("the added peer got no key")
	}
	if _, ok := b2.WireGuard.Peers["byok"]; ok {
		t.Errorf("a peer with its own public key got a generated key")
	}
	// The new key was saved.
	b3, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if b3.WireGuard.Peers["phone"] != b2.WireGuard.Peers["phone"] {
		t.Errorf("the added peer's key was not saved")
	}
	// A peer removed from the spec keeps its key (nothing is deleted).
	if _, changed, err := s.LoadOrCreate(testLab(spec.Peer{Name: "phone"})); err != nil || changed {
		t.Errorf("LoadOrCreate with a peer removed: changed %v, err %v; want no change", changed, err)
	}
}

// TestNoPlaintextSecrets scans every file of the state folder for the
// secrets in any encoding they could leak in.
func TestNoPlaintextSecrets(t *testing.T) {
	s := populated(t)
	if err := s.PutFile("kubeconfig", []byte("client-key-data: not-a-real-secret-but-private")); err != nil {
		t.Fatal(err)
	}
	checkNoSecrets(t, s, "")
}

// checkNoSecrets fails if extra or any file in the state folder holds a
// secret of the store's bundle.
func checkNoSecrets(t *testing.T, s *Store, extra string) {
	t.Helper()
	b, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	wgPriv, err := base64.StdEncoding.DecodeString(b.WireGuard.Server.Private)
	if err != nil {
		t.Fatal(err)
	}
	needles := map[string][]byte{
		"wireguard server private key (base64)": []byte(b.WireGuard.Server.Private),
		"wireguard server private key (raw)":    wgPriv,
		"wireguard peer private key":            []byte(b.WireGuard.Peers["laptop"].Private),
		"talos API CA key (PEM)":                b.Talos.Certs.OS.Key,
		"talos API CA key (base64 PEM)":         []byte(base64.StdEncoding.EncodeToString(b.Talos.Certs.OS.Key)),
		"kubernetes CA key (PEM)":               b.Talos.Certs.K8s.Key,
		"talos admin key (PEM)":                 b.TalosAdmin.Key,
		"bootstrap token":                       []byte(b.Talos.Secrets.BootstrapToken),
		"kubeconfig blob":                       []byte("not-a-real-secret-but-private"),
	}
	for what, needle := range needles {
		if len(needle) < 16 {
			t.Fatalf("%s is too short to search for", what)
		}
		if extra != "" && strings.Contains(extra, string(needle)) {
			t.Errorf("the error message holds the %s", what)
		}
	}
	if extra != "" {
		return
	}
	err = filepath.WalkDir(s.Dir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for what, needle := range needles {
			if bytes.Contains(data, needle) {
				t.Errorf("%s holds the %s in plaintext", path, what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFiles(t *testing.T) {
	s := newStore(t)
	if _, err := s.GetFile("kubeconfig"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile before PutFile: %v, want fs.ErrNotExist", err)
	}
	for _, data := range [][]byte{[]byte("first"), {}, bytes.Repeat([]byte{0, 1, 2}, 100000)} {
		if err := s.PutFile("kubeconfig", data); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetFile("kubeconfig")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("GetFile returned %d bytes, want the %d put", len(got), len(data))
		}
	}
	for _, name := range []string{"", "secrets", "../escape", "a/b", ".hidden", `a\b`} {
		if err := s.PutFile(name, []byte("x")); err == nil {
			t.Errorf("PutFile(%q) succeeded, want an error", name)
		}
		if _, err := s.GetFile(name); err == nil {
			t.Errorf("GetFile(%q) succeeded, want an error", name)
		}
	}
}

func TestOpenIdentityLocation(t *testing.T) {
	config := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", config)
	t.Setenv(IdentityEnv, "")
	s, err := Open(filepath.Join(t.TempDir(), StateDirName))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(config, "homelab", "identity.txt"); s.IdentityFile() != want {
		t.Errorf("default identity file = %s, want %s", s.IdentityFile(), want)
	}
	data, err := os.ReadFile(s.IdentityFile())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "AGE-SECRET-KEY-1") || !strings.Contains(string(data), "# public key: "+s.Recipient()) {
		t.Errorf("identity file is not in age-keygen format")
	}

	env := filepath.Join(t.TempDir(), "id.txt")
	t.Setenv(IdentityEnv, env)
	s, err = Open(filepath.Join(t.TempDir(), StateDirName))
	if err != nil {
		t.Fatal(err)
	}
	if s.IdentityFile() != env {
		t.Errorf("identity file with %s set = %s, want %s", IdentityEnv, s.IdentityFile(), env)
	}
	// Reopening uses the same identity.
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if s2.Recipient() != s.Recipient() {
		t.Errorf("reopening changed the identity")
	}
}

func TestCorruptSecrets(t *testing.T) {
	s := newStore(t)
	if err := s.Save(&Bundle{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "secrets.age"), []byte("age-encryption.org/v1\nnot really"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LoadOrCreate(testLab()); err == nil || !strings.Contains(err.Error(), "decrypting") {
		t.Errorf("LoadOrCreate on a corrupt file: %v, want a decrypting error", err)
	}
}

func TestBadTalosVersion(t *testing.T) {
	s := newStore(t)
	lab := testLab()
	lab.Cluster.TalosVersion = "latest"
	if _, _, err := s.LoadOrCreate(lab); err == nil || !strings.Contains(err.Error(), "cluster.talosVersion") {
		t.Errorf("LoadOrCreate with talosVersion latest: %v, want a cluster.talosVersion error", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "secrets.age")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed LoadOrCreate wrote secrets")
	}
}

func mustKey(t *testing.T) KeyPair {
	t.Helper()
	kp, err := NewWireGuardKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

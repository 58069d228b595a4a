package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
)

// IdentityEnv names the environment variable that points at the age
// identity file, overriding the default location.
const IdentityEnv = "HOMELAB_IDENTITY"

// StateDirName is the state folder's name beside lab.yaml.
const StateDirName = ".homelab"

// bundleName is the bundle's file in the state folder (without .age).
const bundleName = "secrets"

// maxFile bounds what GetFile reads, so a stray huge file cannot exhaust memory.
const maxFile = 64 << 20

// Store is the encrypted state folder beside lab.yaml (default
// <labdir>/.homelab, 0700). Every file in it is age encrypted (0600) to the
// X25519 identity kept outside the lab folder, so the folder may be backed up
// or even committed without leaking anything.
type Store struct {
	dir          string
	identityFile string
	identities   []age.Identity
	recipient    age.Recipient
}

// DefaultIdentityFile is where the age identity lives when HOMELAB_IDENTITY
// is unset: $XDG_CONFIG_HOME/homelab/identity.txt, else
// ~/.config/homelab/identity.txt.
func DefaultIdentityFile() (string, error) {
	if p := os.Getenv(IdentityEnv); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the identity file: %w (set %s to a file path)", err, IdentityEnv)
	}
	return filepath.Join(dir, "homelab", "identity.txt"), nil
}

// Open opens the state folder stateDir (usually <labdir>/.homelab) with the
// identity from HOMELAB_IDENTITY or the default location, creating the
// identity on first use.
func Open(stateDir string) (*Store, error) {
	id, err := DefaultIdentityFile()
	if err != nil {
		return nil, err
	}
	return OpenWithIdentity(stateDir, id)
}

// OpenWithIdentity opens the state folder stateDir with the age identity in
// identityFile. A missing identity file is created (0600, its folder 0700)
// unless the state folder already holds secrets, which a new identity could
// never decrypt. The state folder itself is created on the first write.
func OpenWithIdentity(stateDir, identityFile string) (*Store, error) {
	if abs, err := filepath.Abs(identityFile); err == nil {
		identityFile = abs
	}
	s := &Store{dir: stateDir, identityFile: identityFile}
	if inside(stateDir, identityFile) {
		return nil, &IdentityError{
			File: identityFile,
			msg:  fmt.Sprintf("identity file %s is inside the state folder %s it protects", identityFile, stateDir),
			hint: fmt.Sprintf("keep the identity outside the lab folder: unset %s or point it at ~/.config/homelab/identity.txt", IdentityEnv),
		}
	}
	data, err := os.ReadFile(identityFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(s.path(bundleName)); serr == nil {
			return nil, &IdentityError{
				File: identityFile,
				msg:  fmt.Sprintf("identity file %s does not exist, but %s holds secrets encrypted to an identity", identityFile, s.path(bundleName)),
				hint: fmt.Sprintf("point %s at the identity file that created this lab's secrets, or move %s away to start over with new secrets", IdentityEnv, stateDir),
			}
		}
		if err := s.createIdentity(); err != nil {
			return nil, err
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("reading identity file %s: %w", identityFile, err)
	}
	if err := checkPrivate(identityFile); err != nil {
		return nil, err
	}
	if err := s.useIdentity(data); err != nil {
		return nil, err
	}
	return s, nil
}

// inside reports whether path lies within dir.
func inside(dir, path string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// checkPrivate refuses an identity file that others can read, as ssh does
// for private keys.
func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking identity file %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &IdentityError{
			File: path,
			msg:  fmt.Sprintf("identity file %s is accessible by other users (mode %04o)", path, fi.Mode().Perm()),
			hint: fmt.Sprintf("chmod 600 %s", path),
		}
	}
	return nil
}

func (s *Store) useIdentity(data []byte) error {
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		// age's parse errors do not include the offending line.
		return fmt.Errorf("reading identity file %s: %w", s.identityFile, err)
	}
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			s.recipient = id.Recipient()
		case *age.HybridIdentity:
			s.recipient = id.Recipient()
		default:
			continue
		}
		break
	}
	if s.recipient == nil {
		return &IdentityError{
			File: s.identityFile,
			msg:  fmt.Sprintf("identity file %s holds no X25519 or hybrid age identity", s.identityFile),
			hint: "generate one with age-keygen, or remove the file to let homelab create it",
		}
	}
	s.identities = ids
	return nil
}

func (s *Store) createIdentity() error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return fmt.Errorf("generating age identity: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# homelab age identity: decrypts the lab state folders (.homelab) of this user.\n")
	fmt.Fprintf(&b, "# Keep it safe and out of Git; losing it loses the labs' secrets.\n")
	fmt.Fprintf(&b, "# created: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# public key: %s\n", id.Recipient())
	fmt.Fprintf(&b, "%s\n", id)
	if err := os.MkdirAll(filepath.Dir(s.identityFile), 0o700); err != nil {
		return fmt.Errorf("creating identity folder: %w", err)
	}
	if err := writeAtomic(s.identityFile, b.Bytes()); err != nil {
		return fmt.Errorf("writing identity file %s: %w", s.identityFile, err)
	}
	s.identities = []age.Identity{id}
	s.recipient = id.Recipient()
	return nil
}

// Dir is the state folder.
func (s *Store) Dir() string { return s.dir }

// IdentityFile is the age identity file the store decrypts with.
func (s *Store) IdentityFile() string { return s.identityFile }

// Recipient is the age public key the store encrypts to.
func (s *Store) Recipient() string { return fmt.Sprint(s.recipient) }

func (s *Store) path(name string) string { return filepath.Join(s.dir, name+".age") }

// checkName keeps blobs inside the state folder and away from the bundle.
func checkName(name string) error {
	if name == "" || name == bundleName || name != filepath.Base(name) ||
		strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("invalid state file name %q: use a plain name such as kubeconfig", name)
	}
	return nil
}

// PutFile encrypts data into <name>.age in the state folder.
func (s *Store) PutFile(name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	return s.put(name, data)
}

// GetFile decrypts <name>.age from the state folder. It returns an error
// matching fs.ErrNotExist when the file is absent.
func (s *Store) GetFile(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return s.get(name)
}

func (s *Store) put(name string, data []byte) error {
	if err := s.ensureDir(); err != nil {
		return err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, s.recipient)
	if err != nil {
		return fmt.Errorf("encrypting %s: %w", name, err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("encrypting %s: %w", name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encrypting %s: %w", name, err)
	}
	if err := writeAtomic(s.path(name), buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", s.path(name), err)
	}
	return nil
}

func (s *Store) get(name string) ([]byte, error) {
	p := s.path(name)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, s.identities...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, &IdentityError{
				File: s.identityFile,
				msg: fmt.Sprintf("decrypting %s: it was encrypted to another identity than the one in %s (set %s to the identity file that created it)",
					p, s.identityFile, IdentityEnv),
				hint: fmt.Sprintf("point %s at the identity file that created this lab's secrets, or move %s away to start over with new secrets", IdentityEnv, s.dir),
				err:  ErrWrongIdentity,
			}
		}
		return nil, fmt.Errorf("decrypting %s: %w", p, err)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("decrypting %s: %w", p, err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("decrypting %s: larger than %d MiB", p, maxFile>>20)
	}
	return data, nil
}

// ensureDir creates the state folder 0700 and tightens an existing one.
func (s *Store) ensureDir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating state folder: %w", err)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("securing state folder: %w", err)
	}
	return nil
}

// writeAtomic writes data to path with mode 0600 through a temporary file
// in the same folder and a rename, so readers never see half a file.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: make the rename durable
		d.Close()
	}
	return nil
}

// ErrWrongIdentity matches (errors.Is) a decryption that failed because the
// file was encrypted to another identity.
var ErrWrongIdentity = errors.New("wrong age identity")

// IdentityError is a problem with the age identity; Hint says how to fix it.
type IdentityError struct {
	// File is the identity file that was used.
	File string
	msg  string
	hint string
	err  error
}

func (e *IdentityError) Error() string { return e.msg }

// Hint is a line telling the user how to fix the problem.
func (e *IdentityError) Hint() string { return e.hint }

func (e *IdentityError) Unwrap() error { return e.err }

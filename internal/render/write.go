package render

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Write puts the artifacts under dir: secret files 0600 in 0700 folders,
// the others 0644 in 0755 folders, and dir itself 0700 when any artifact is
// secret. Existing files are replaced (through a temporary file and a
// rename) and their modes corrected. It returns how many secret files it
// wrote.
func Write(dir string, arts []Artifact) (secretCount int, err error) {
	anySecret := false
	secretDirs := map[string]bool{}
	for _, a := range arts {
		if err := checkPath(a.Path); err != nil {
			return 0, fmt.Errorf("writing artifacts: %w", err)
		}
		if a.Secret {
			anySecret = true
			for d := filepath.Dir(filepath.FromSlash(a.Path)); d != "."; d = filepath.Dir(d) {
				secretDirs[d] = true
			}
		}
	}
	mode := os.FileMode(0o755)
	if anySecret {
		mode = 0o700
	}
	if err := mkdir(dir, mode); err != nil {
		return 0, err
	}
	for _, a := range arts {
		rel := filepath.FromSlash(a.Path)
		// Create the folders top down with their modes.
		var parts []string
		for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
			parts = append([]string{d}, parts...)
		}
		for _, d := range parts {
			m := os.FileMode(0o755)
			if secretDirs[d] {
				m = 0o700
			}
			if err := mkdir(filepath.Join(dir, d), m); err != nil {
				return 0, err
			}
		}
		fm := os.FileMode(0o644)
		if a.Secret {
			fm = 0o600
			secretCount++
		}
		if err := writeFile(filepath.Join(dir, rel), a.Data, fm); err != nil {
			return 0, err
		}
	}
	return secretCount, nil
}

// mkdir creates dir with mode, or sets mode on an existing folder.
func mkdir(dir string, mode os.FileMode) error {
	err := os.Mkdir(dir, mode)
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("writing artifacts: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("writing artifacts: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("writing artifacts: %s exists and is not a folder", dir)
	}
	if fi.Mode().Perm() != mode {
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("writing artifacts: %w", err)
		}
	}
	return nil
}

// writeFile writes data to a temporary file created with mode in the same
// folder, then renames it over path, so a reader never sees a half-written
// file nor a secret with loose permissions.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("writing artifacts: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ownerDir records which state folder a running lab belongs to, one file
// per lab name. Like the namespaces, it lives in /run and goes away with a
// reboot. Two lab folders that use the same name would otherwise adopt
// (and destroy) each other's namespaces.
const ownerDir = "/run/homelab"

func ownerFile(lab string) string { return filepath.Join(ownerDir, lab+".owner") }

// ownerError says that another folder's lab holds the name.
type ownerError struct {
	lab, other string
}

func (e *ownerError) Error() string {
	return fmt.Sprintf("a local lab named %s already runs from %s", e.lab, filepath.Dir(e.other))
}

func (e *ownerError) Hint() string {
	return fmt.Sprintf("destroy it there first (homelab destroy -f %s/lab.yaml), or give this lab another name", filepath.Dir(e.other))
}

// checkOwner fails when the lab's name is held by another state folder
// that still exists.
func (p *Provider) checkOwner() error {
	b, err := os.ReadFile(ownerFile(p.lab.Name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the lab's owner: %w", err)
	}
	other := strings.TrimSpace(string(b))
	if other == "" || other == p.stateDir {
		return nil
	}
	if _, err := os.Stat(other); err != nil {
		return nil // its folder is gone: nobody can destroy it from there
	}
	return &ownerError{lab: p.lab.Name, other: other}
}

// claimOwner records this state folder as the lab's.
func (p *Provider) claimOwner() error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("recording the lab's owner: %w", err)
	}
	if err := writeFileAtomic(ownerFile(p.lab.Name), []byte(p.stateDir+"\n"), 0o644); err != nil {
		return fmt.Errorf("recording the lab's owner: %w", err)
	}
	return nil
}

// releaseOwner forgets the record if it is this folder's.
func (p *Provider) releaseOwner() {
	if b, err := os.ReadFile(ownerFile(p.lab.Name)); err == nil && strings.TrimSpace(string(b)) == p.stateDir {
		os.Remove(ownerFile(p.lab.Name))
	}
}

package gitops

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"filippo.io/age"
)

// SOPSKey returns the age recipient of the lab's SOPS key, creating the
// key on first use. The identity (the private half) stays encrypted in the
// state folder (StateFileSOPSAgeKey) and goes to the cluster only as the
// flux-system/sops-age secret. changed says whether it was created.
func SOPSKey(st Store) (recipient string, changed bool, err error) {
	data, err := st.GetFile(StateFileSOPSAgeKey)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return "", false, fmt.Errorf("creating the SOPS age key: %w", err)
		}
		if err := st.PutFile(StateFileSOPSAgeKey, []byte(id.String()+"\n")); err != nil {
			return "", false, fmt.Errorf("storing the SOPS age key: %w", err)
		}
		return id.Recipient().String(), true, nil
	case err != nil:
		return "", false, fmt.Errorf("reading the SOPS age key: %w", err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(data)))
	if err != nil {
		// Never pass the parser's error on: it may quote the key.
		return "", false, fmt.Errorf("reading the SOPS age key: %s does not hold an age identity", StateFileSOPSAgeKey)
	}
	return id.Recipient().String(), false, nil
}

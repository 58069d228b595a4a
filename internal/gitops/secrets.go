package gitops

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"reflect"
	"slices"
	"strings"

	"filippo.io/age"
	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/sops"
	"github.com/homelab-dev/homelab/internal/spec"
)

// StateFileSealedSecrets keeps, in the state folder, the SOPS-encrypted
// files EncryptSecrets wrote last (path in the tree to bytes), so that
// the next run reuses them while nothing changed: encrypting again would
// draw a new data key and IVs and change every byte in Git.
const StateFileSealedSecrets = "gitops-secrets-sops"

// EncryptSecrets returns the apps' and dashboards' Secrets (AppSecrets)
// as SOPS files for the tree, one Secret per file at its folder's
// <name>.sops.yaml, values of data and stringData encrypted to recipient
// (the lab's SOPS key). A file encrypted before is reused when it still
// decrypts, with the lab's key from the state folder, to the same Secret
// and has the same recipients and rule.
func EncryptSecrets(lab *spec.Lab, st Store, recipient string) ([]render.Artifact, error) {
	plain, _, err := AppSecrets(lab, st)
	if err != nil {
		return nil, err
	}
	byName := map[string][]byte{}
	for _, doc := range splitDocs(plain) {
		var o struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return nil, errors.New("encrypting the app secrets: the state file is not Secret manifests")
		}
		byName[o.Metadata.Namespace+"/"+o.Metadata.Name] = doc
	}
	identity, err := sopsIdentity(st)
	if err != nil {
		return nil, err
	}
	previous, err := sealedSecrets(st)
	if err != nil {
		return nil, err
	}
	sealed := map[string]string{}
	var out []render.Artifact
	for _, d := range secretDefs(lab) {
		doc, ok := byName[d.namespace+"/"+d.name]
		if !ok {
			return nil, fmt.Errorf("encrypting the app secrets: %s/%s is missing from the state folder", d.namespace, d.name)
		}
		p := d.path()
		enc := []byte(previous[p])
		if !reusable(enc, doc, identity, recipient) {
			if enc, err = sops.Encrypt(doc, sops.Options{Recipients: []string{recipient}, EncryptedRegex: sops.KubernetesRegex}); err != nil {
				return nil, fmt.Errorf("encrypting secret %s/%s: %w", d.namespace, d.name, err)
			}
		}
		sealed[p] = string(enc)
		out = append(out, render.Artifact{Path: p, Data: enc})
	}
	if !maps.Equal(sealed, previous) {
		data, err := json.Marshal(sealed)
		if err != nil {
			return nil, fmt.Errorf("storing the encrypted app secrets: %w", err)
		}
		if err := st.PutFile(StateFileSealedSecrets, data); err != nil {
			return nil, fmt.Errorf("storing the encrypted app secrets: %w", err)
		}
	}
	return out, nil
}

// sopsIdentity reads the lab's SOPS age identity (see SOPSKey).
func sopsIdentity(st Store) (*age.X25519Identity, error) {
	data, err := st.GetFile(StateFileSOPSAgeKey)
	if err != nil {
		return nil, fmt.Errorf("reading the SOPS age key: %w", err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("reading the SOPS age key: %s does not hold an age identity", StateFileSOPSAgeKey)
	}
	return id, nil
}

func sealedSecrets(st Store) (map[string]string, error) {
	data, err := st.GetFile(StateFileSealedSecrets)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return map[string]string{}, nil
	case err != nil:
		return nil, fmt.Errorf("reading the encrypted app secrets: %w", err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(data, &m); err != nil {
		// A damaged cache only costs a new encryption.
		return map[string]string{}, nil
	}
	return m, nil
}

// reusable says whether enc, a SOPS file written before, holds exactly the
// Secret plain for exactly the recipient with homelab's rule.
func reusable(enc, plain []byte, id *age.X25519Identity, recipient string) bool {
	if len(enc) == 0 {
		return false
	}
	m, err := sops.Inspect(enc)
	if err != nil || m.EncryptedRegex != sops.KubernetesRegex || !slices.Equal(m.Recipients(), []string{recipient}) {
		return false
	}
	dec, err := sops.Decrypt(enc, id)
	if err != nil {
		return false
	}
	var a, b any
	if yaml.Unmarshal(dec, &a) != nil || yaml.Unmarshal(plain, &b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

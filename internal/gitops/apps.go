package gitops

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"

	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/spec"
)

// appFile is one app's manifests, in apps/<name>/<name>.yaml beside the
// app's encrypted secrets.
type appFile struct {
	name string
	objs []M
}

// appManifests renders each app of the spec from its template.
func appManifests(lab *spec.Lab) ([]appFile, error) {
	var out []appFile
	for i, a := range lab.GitOps.Apps {
		var objs []M
		switch a.Name {
		case "nextcloud":
			objs = nextcloud(a)
		case "openproject":
			objs = openproject(a)
		default:
			return nil, fmt.Errorf("gitops.apps[%d]: no template for app %q (nextcloud, openproject)", i, a.Name)
		}
		out = append(out, appFile{name: a.Name, objs: objs})
	}
	return out, nil
}

// gib renders a size for a PVC request, in whole GiB.
func gib(s spec.Size) string { return fmt.Sprintf("%dGi", s.GiB()) }

// nextcloud is Nextcloud with its PostgreSQL, both on local-path volumes;
// credentials from the nextcloud-admin and nextcloud-db secrets.
func nextcloud(a spec.App) []M {
	const ns = "nextcloud"
	return []M{
		namespace(ns, false),
		helmRepository("nextcloud", ns, "https://nextcloud.github.io/helm/"),
		helmRelease("nextcloud", ns, "nextcloud", NextcloudChart, repoRef("nextcloud"), M{
			"nextcloud": M{
				"host":           a.Host,
				"trustedDomains": []string{a.Host},
				"existingSecret": M{"enabled": true, "secretName": "nextcloud-admin", "usernameKey": "username", "passwordKey": "password"},
			},
			"ingress":          M{"enabled": true, "className": PublicIngressClass},
			"internalDatabase": M{"enabled": false},
			"externalDatabase": M{
				"enabled": true, "type": "postgresql", "host": "nextcloud-postgresql", "database": "nextcloud",
				"existingSecret": M{"enabled": true, "secretName": "nextcloud-db", "usernameKey": "username", "passwordKey": "password"},
			},
			"postgresql": M{
				"enabled": true,
				"global": M{"postgresql": M{"auth": M{
					"username": "nextcloud", "database": "nextcloud", "existingSecret": "nextcloud-db",
					"secretKeys": M{"adminPasswordKey": "postgres-password", "userPasswordKey": "password"},
				}}},
				"primary": M{"persistence": M{"enabled": true, "storageClass": DefaultStorageClass, "size": "8Gi"}},
			},
			"persistence": M{"enabled": true, "storageClass": DefaultStorageClass, "accessMode": "ReadWriteOnce", "size": gib(a.Storage)},
		}),
	}
}

// openproject is OpenProject with its PostgreSQL; credentials from the
// openproject-db secret.
func openproject(a spec.App) []M {
	const ns = "openproject"
	return []M{
		namespace(ns, false),
		helmRepository("openproject", ns, "https://charts.openproject.org"),
		helmRelease("openproject", ns, "openproject", OpenProjectChart, repoRef("openproject"), M{
			"openproject": M{"host": a.Host, "https": true},
			"ingress":     M{"enabled": true, "ingressClassName": PublicIngressClass, "host": a.Host},
			"postgresql": M{
				"auth": M{
					"username": "openproject", "database": "openproject", "existingSecret": "openproject-db",
					"secretKeys": M{"adminPasswordKey": "postgres-password", "userPasswordKey": "password"},
				},
				"primary": M{"persistence": M{"enabled": true, "storageClass": DefaultStorageClass, "size": "8Gi"}},
			},
			"persistence": M{"enabled": true, "storageClassName": DefaultStorageClass, "size": gib(a.Storage)},
		}),
	}
}

// secretDef is one Secret the apps and dashboards expect, with the keys
// that get random values and those with fixed ones, and the folder of the
// repository its encrypted file goes to (dir/name.sops.yaml).
type secretDef struct {
	name, namespace, dir string
	random               []string
	fixed                map[string]string
}

// path is where the secret's SOPS-encrypted file lives in the tree.
func (d secretDef) path() string { return d.dir + "/" + d.name + ".sops.yaml" }

const infraDir = "infrastructure/controllers"

func secretDefs(lab *spec.Lab) []secretDef {
	defs := []secretDef{{name: "grafana-admin", namespace: "monitoring", dir: infraDir, random: []string{"admin-password"}, fixed: map[string]string{"admin-user": "admin"}}}
	for _, a := range lab.GitOps.Apps {
		dir := "apps/" + a.Name
		switch a.Name {
		case "nextcloud":
			defs = append(defs,
				secretDef{name: "nextcloud-admin", namespace: "nextcloud", dir: dir, random: []string{"password"}, fixed: map[string]string{"username": "admin"}},
				secretDef{name: "nextcloud-db", namespace: "nextcloud", dir: dir, random: []string{"password", "postgres-password"}, fixed: map[string]string{"username": "nextcloud"}},
			)
		case "openproject":
			defs = append(defs,
				secretDef{name: "openproject-db", namespace: "openproject", dir: dir, random: []string{"password", "postgres-password"}, fixed: map[string]string{"username": "openproject"}},
			)
		}
	}
	return defs
}

// Store keeps files encrypted; *secrets.Store is one.
type Store interface {
	PutFile(name string, data []byte) error
	GetFile(name string) ([]byte, error)
}

// AppSecrets returns the Secret manifests the lab's apps and dashboards
// need, in the clear, as one multi-document YAML kept encrypted in the
// state folder (StateFileAppSecrets): created on first use, and extended
// (never regenerated) when apps are added. They hold passwords: never
// print them; the repository gets them only SOPS-encrypted (Build).
// changed says whether the store was written.
func AppSecrets(lab *spec.Lab, st Store) (data []byte, changed bool, err error) {
	existing := map[string]M{}
	old, err := st.GetFile(StateFileAppSecrets)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, false, fmt.Errorf("reading the app secrets: %w", err)
	default:
		for _, doc := range bytes.Split(old, []byte("\n---\n")) {
			var o M
			if err := yaml.Unmarshal(doc, &o); err != nil || o == nil {
				return nil, false, errors.New("reading the app secrets: the state file is not Secret manifests")
			}
			meta, _ := o["metadata"].(map[string]any)
			existing[fmt.Sprint(meta["namespace"], "/", meta["name"])] = o
		}
	}
	var docs [][]byte
	for _, d := range secretDefs(lab) {
		o, ok := existing[d.namespace+"/"+d.name]
		if !ok {
			data := M{}
			for k, v := range d.fixed {
				data[k] = v
			}
			for _, k := range d.random {
				data[k], err = password()
				if err != nil {
					return nil, false, err
				}
			}
			o = obj("v1", "Secret", d.name, d.namespace, nil)
			o["type"] = "Opaque"
			o["stringData"] = data
			changed = true
		}
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, false, fmt.Errorf("encoding the app secrets: %w", err)
		}
		docs = append(docs, bytes.TrimSuffix(y, []byte("\n")))
	}
	data = append(bytes.Join(docs, []byte("\n---\n")), '\n')
	if changed || len(existing) != len(docs) {
		if err := st.PutFile(StateFileAppSecrets, data); err != nil {
			return nil, false, fmt.Errorf("storing the app secrets: %w", err)
		}
		changed = true
	}
	return data, changed, nil
}

func password() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/sops"
	"github.com/homelab-dev/homelab/internal/spec"
)

// M is one YAML mapping of a manifest.
type M = map[string]any

// Options are the inputs of Tree that do not come from the spec.
type Options struct {
	// SOPSRecipient is the lab's age recipient (age1...) for SOPS; it is
	// written to .sops.yaml so that secrets added to the repository later
	// are encrypted for the cluster. Empty leaves .sops.yaml out.
	SOPSRecipient string
	// Secrets are the SOPS-encrypted Secret manifests of the apps and
	// dashboards (see Build and EncryptSecrets), each listed in the
	// kustomization.yaml of its folder (apps/<app> or
	// infrastructure/controllers). None leaves them out: the tree is then
	// only good for its Flux sync files.
	Secrets []render.Artifact
}

// Build renders the lab's whole repository in one call: the SOPS age key
// and the app passwords are read from the state folder (created on first
// use), the passwords are SOPS-encrypted to the lab's key (the previous
// encrypted files are kept while the passwords and recipients are the
// same, so that a run with nothing new changes no byte), and the tree
// lists them. Writing the result into a Git repository puts no secret
// in the clear there.
func Build(lab *spec.Lab, st Store) ([]render.Artifact, error) {
	recipient, _, err := SOPSKey(st)
	if err != nil {
		return nil, err
	}
	secrets, err := EncryptSecrets(lab, st, recipient)
	if err != nil {
		return nil, err
	}
	return Tree(lab, Options{SOPSRecipient: recipient, Secrets: secrets})
}

// Repository is where Flux pulls the lab's repository from:
// gitops.repository, else the repository on the manager VM, served over
// SSH with a deploy key.
func Repository(lab *spec.Lab) (string, error) {
	if lab.GitOps.Repository != "" {
		return lab.GitOps.Repository, nil
	}
	for _, m := range lab.Machines() {
		if m.Role != spec.MachineManager {
			continue
		}
		if a, ok := m.Address(spec.RoleAdmin); ok && a.IsValid() {
			return fmt.Sprintf("ssh://git@%s/srv/git/%s.git", a, lab.Name), nil
		}
	}
	return "", errors.New("the lab has no gitops.repository and no manager VM on the admin network to host it")
}

// Tree renders the repository: paths relative to its root, sorted. The
// same lab and options give the same bytes.
func Tree(lab *spec.Lab, opts Options) ([]render.Artifact, error) {
	if lab.Name == "" {
		return nil, errors.New("rendering the gitops tree: the lab has no name")
	}
	repo, err := Repository(lab)
	if err != nil {
		return nil, fmt.Errorf("rendering the gitops tree: %w", err)
	}
	adminCIDRs, err := adminSources(lab)
	if err != nil {
		return nil, fmt.Errorf("rendering the gitops tree: %w", err)
	}
	apps, err := appManifests(lab)
	if err != nil {
		return nil, fmt.Errorf("rendering the gitops tree: %w", err)
	}
	t := &tree{files: map[string][]M{}}
	cluster := "clusters/" + lab.Name

	// Flux itself: the components are fetched at bootstrap for FluxVersion.
	t.add(cluster+"/flux-system/gotk-sync.yaml",
		obj("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", FluxNamespace, M{
			"interval":  defaultSourceInterval,
			"ref":       M{"branch": lab.GitOps.Branch},
			"secretRef": M{"name": GitCredentialsSecret},
			"url":       repo,
		}),
		fluxKustomization("flux-system", "./"+cluster, nil, false),
	)
	t.add(cluster+"/flux-system/kustomization.yaml", kustomization("gotk-components.yaml", "gotk-sync.yaml"))
	// Both hold SOPS-encrypted Secrets that kustomize-controller decrypts
	// with the lab's age key (flux-system/sops-age).
	t.add(cluster+"/infrastructure.yaml", withDecryption(fluxKustomization("infrastructure", "./"+infraDir, nil, true)))
	t.add(cluster+"/apps.yaml", withDecryption(fluxKustomization("apps", "./apps", []string{"infrastructure"}, true)))

	// The encrypted secrets, by folder.
	secretFiles := map[string][]string{}
	for _, a := range opts.Secrets {
		dir, file := path.Split(a.Path)
		secretFiles[strings.TrimSuffix(dir, "/")] = append(secretFiles[strings.TrimSuffix(dir, "/")], file)
	}

	// Infrastructure.
	appsNet, _ := lab.NetworkByRole(spec.RoleApps)
	var infra []string
	addInfra := func(name string, objs ...M) {
		t.add("infrastructure/controllers/"+name, objs...)
		infra = append(infra, name)
	}
	addInfra("ingress-nginx.yaml", ingressNginx(appsNet.CIDR, adminCIDRs)...)
	addInfra("cert-manager.yaml", certManager()...)
	addInfra("local-path-provisioner.yaml", localPath()...)
	addInfra("kube-prometheus-stack.yaml", monitoring(lab, adminCIDRs)...)
	addInfra("victoria-logs.yaml", logging(lab, adminCIDRs)...)
	t.add(infraDir+"/kustomization.yaml", kustomization(append(infra, takeSecrets(secretFiles, infraDir)...)...))

	// Applications, one folder each.
	var appDirs []string
	for _, a := range apps {
		dir := "apps/" + a.name
		t.add(dir+"/"+a.name+".yaml", a.objs...)
		t.add(dir+"/kustomization.yaml", kustomization(append([]string{a.name + ".yaml"}, takeSecrets(secretFiles, dir)...)...))
		appDirs = append(appDirs, a.name)
	}
	t.add("apps/kustomization.yaml", kustomization(appDirs...))

	if len(secretFiles) > 0 {
		dirs := slices.Sorted(maps.Keys(secretFiles))
		return nil, fmt.Errorf("rendering the gitops tree: encrypted secrets in %s, which no kustomization lists", strings.Join(dirs, ", "))
	}
	arts, err := t.artifacts()
	if err != nil {
		return nil, fmt.Errorf("rendering the gitops tree: %w", err)
	}
	for _, a := range opts.Secrets {
		if !strings.HasSuffix(a.Path, ".sops.yaml") {
			return nil, fmt.Errorf("rendering the gitops tree: secret %s is not named *.sops.yaml", a.Path)
		}
		if _, err := sops.Inspect(a.Data); err != nil {
			return nil, fmt.Errorf("rendering the gitops tree: %s: %w", a.Path, err)
		}
		arts = append(arts, render.Artifact{Path: a.Path, Data: a.Data})
	}
	if opts.SOPSRecipient != "" {
		if !strings.HasPrefix(opts.SOPSRecipient, "age1") {
			return nil, fmt.Errorf("rendering the gitops tree: SOPS recipient %q is not an age recipient", opts.SOPSRecipient)
		}
		arts = append(arts, render.Artifact{Path: ".sops.yaml", Data: sopsConfig(opts.SOPSRecipient)})
	}
	arts = append(arts, render.Artifact{Path: "README.md", Data: readme(lab, repo)})
	slices.SortFunc(arts, func(a, b render.Artifact) int { return strings.Compare(a.Path, b.Path) })
	return arts, nil
}

// takeSecrets returns the sorted secret files of a folder and forgets them.
func takeSecrets(files map[string][]string, dir string) []string {
	f := files[dir]
	delete(files, dir)
	slices.Sort(f)
	return f
}

func withDecryption(k M) M {
	k["spec"].(M)["decryption"] = M{"provider": "sops", "secretRef": M{"name": SOPSAgeSecret}}
	return k
}

type tree struct {
	files map[string][]M
}

func (t *tree) add(p string, objs ...M) { t.files[p] = append(t.files[p], objs...) }

func (t *tree) artifacts() ([]render.Artifact, error) {
	var out []render.Artifact
	for p, objs := range t.files {
		var b bytes.Buffer
		for i, o := range objs {
			if i > 0 {
				b.WriteString("---\n")
			}
			y, err := yaml.Marshal(o)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			b.Write(y)
		}
		out = append(out, render.Artifact{Path: path.Clean(p), Data: b.Bytes()})
	}
	return out, nil
}

func obj(apiVersion, kind, name, namespace string, spec M) M {
	meta := M{"name": name}
	if namespace != "" {
		meta["namespace"] = namespace
	}
	o := M{"apiVersion": apiVersion, "kind": kind, "metadata": meta}
	if spec != nil {
		o["spec"] = spec
	}
	return o
}

func namespace(name string, privileged bool) M {
	o := obj("v1", "Namespace", name, "", nil)
	if privileged {
		// Talos enforces the baseline Pod Security Standard; these
		// workloads read host paths or the host's logs.
		o["metadata"].(M)["labels"] = M{
			"pod-security.kubernetes.io/enforce": "privileged",
			"pod-security.kubernetes.io/audit":   "privileged",
			"pod-security.kubernetes.io/warn":    "privileged",
		}
	}
	return o
}

func kustomization(resources ...string) M {
	return M{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  resources,
	}
}

func fluxKustomization(name, p string, dependsOn []string, wait bool) M {
	spec := M{
		"interval":  defaultSyncInterval,
		"path":      p,
		"prune":     true,
		"sourceRef": M{"kind": "GitRepository", "name": "flux-system"},
	}
	if wait {
		spec["wait"] = true
		spec["timeout"] = "15m"
		spec["retryInterval"] = "1m"
	}
	for _, d := range dependsOn {
		deps, _ := spec["dependsOn"].([]M)
		spec["dependsOn"] = append(deps, M{"name": d})
	}
	return obj("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, FluxNamespace, spec)
}

func helmRepository(name, namespace, url string) M {
	return obj("source.toolkit.fluxcd.io/v1", "HelmRepository", name, namespace, M{
		"interval": "12h",
		"url":      url,
	})
}

func helmRelease(name, namespace, chart, version string, source M, values M) M {
	spec := M{
		"interval": defaultReleaseInterval,
		"chart": M{"spec": M{
			"chart":     chart,
			"sourceRef": source,
			"interval":  "12h",
		}},
		"install": M{"remediation": M{"retries": 3}},
		"upgrade": M{"remediation": M{"retries": 3}},
		"values":  values,
	}
	if version != "" {
		spec["chart"].(M)["spec"].(M)["version"] = version
	}
	return obj("helm.toolkit.fluxcd.io/v2", "HelmRelease", name, namespace, spec)
}

func repoRef(name string) M { return M{"kind": "HelmRepository", "name": name} }

// adminSources are the client networks allowed on the dashboards: the
// admin network and the VPN tunnel.
func adminSources(lab *spec.Lab) (string, error) {
	admin, ok := lab.NetworkByRole(spec.RoleAdmin)
	if !ok || !admin.CIDR.IsValid() {
		return "", errors.New("the lab has no admin network")
	}
	srcs := []netip.Prefix{admin.CIDR.Masked()}
	if lab.VPN.Tunnel.IsValid() {
		srcs = append(srcs, lab.VPN.Tunnel.Masked())
	}
	s := make([]string, len(srcs))
	for i, p := range srcs {
		s[i] = p.String()
	}
	return strings.Join(s, ","), nil
}

// sopsConfig is .sops.yaml: the rule homelab encrypts the apps' secrets
// with (EncryptSecrets), for the sops command.
func sopsConfig(recipient string) []byte {
	return []byte(`# SOPS rules of this repository. Secrets are files named *.sops.yaml,
# one Secret per file, encrypted for the lab's age key (kept in the
# encrypted state folder and given to Flux as the flux-system/` + SOPSAgeSecret + `
# secret). homelab writes the apps' secrets this way; for one of yours:
#   sops --encrypt --in-place apps/<app>/my-secret.sops.yaml
# and list it in that folder's kustomization.yaml.
creation_rules:
  - path_regex: \.sops\.ya?ml$
    encrypted_regex: ` + sops.KubernetesRegex + `
    age: ` + recipient + "\n")
}

func readme(lab *spec.Lab, repo string) []byte {
	components := "homelab gitops bootstrap: commit it with the rest."
	ownership := ` Secrets you add here must be
encrypted the same way (see .sops.yaml).
`
	if lab.GitOps.Repository == "" {
		components = "homelab apply, which commits it here."
		ownership = `

This repository is homelab's (the manager's repository): homelab apply,
or homelab gitops push, replaces its whole tree with one commit and
refuses to push over commits made by hand. Change the lab through
lab.yaml; do not add or edit files here (homelab gitops push --force puts
the lab's tree back on top of hand-made commits).
`
	}
	return []byte(`# GitOps repository of the lab ` + lab.Name + `

Written by ` + "`homelab gitops init`" + `; Flux ` + FluxVersion + ` reconciles the cluster from it
(` + repo + `, branch ` + lab.GitOps.Branch + `).

- clusters/` + lab.Name + `/flux-system: Flux's own sync. gotk-components.yaml
  (Flux ` + FluxVersion + `'s install manifests) is downloaded and added here by
  ` + components + `
- infrastructure/controllers: ingress-nginx (public, PROXY protocol from the
  lab's load balancer, NodePorts ` + fmt.Sprint(PublicHTTPNodePort, "/", PublicHTTPSNodePort) + `; admin, allowlisted to the
  admin network and the VPN, host ports ` + fmt.Sprint(AdminHTTPPort, "/", AdminHTTPSPort) + ` on the workers), cert-manager,
  local-path-provisioner (default storage class), kube-prometheus-stack,
  VictoriaLogs.
- apps/<app>: the applications of lab.yaml, one folder each.

Secrets (*.sops.yaml: the apps' database and admin passwords, Grafana's
admin password) are SOPS-encrypted with age for the lab's key; Flux
decrypts them in the cluster. The key and the passwords in the clear stay
in the lab's encrypted state folder.` + ownership)
}

// Package gitops writes the lab's GitOps repository: the Flux sync
// configuration of the cluster, the infrastructure (ingress controllers,
// cert-manager, a storage class, metrics and dashboards, logging) and the
// applications of the spec (Nextcloud, OpenProject), as Flux
// HelmReleases. The output is deterministic and every manifest decodes
// strictly into the Kubernetes and Flux API types (see Decode).
//
// Application secrets (database and admin passwords) are generated once
// by AppSecrets into the encrypted state folder and written to the
// repository only SOPS-encrypted with age (EncryptSecrets, internal/sops)
// for the lab's key, which Flux's kustomize-controller holds as
// flux-system/sops-age. Build renders the whole tree, secrets included,
// from the spec and the state folder.
package gitops

// Package gitops writes the lab's GitOps repository: the Flux sync
// configuration of the cluster, the infrastructure (ingress controllers,
// cert-manager, a storage class, metrics and dashboards, logging) and the
// applications of the spec (Nextcloud, OpenProject), as Flux
// HelmReleases. The output is deterministic and every manifest decodes
// strictly into the Kubernetes and Flux API types (see Decode).
//
// Application secrets (database and admin passwords) are not written to
// the repository: AppSecrets generates them as Kubernetes Secret
// manifests that live in the encrypted state folder and are applied to
// the cluster when Flux is bootstrapped.
package gitops

package gitops

// Pinned versions. Flux's install manifests (gotk-components.yaml) are
// not vendored: they are fetched for FluxVersion when Flux is
// bootstrapped. The chart versions were each seen published (release
// notes or dependency-update pull requests) when they were pinned;
// ingress-nginx 4.13.3 and local-path-provisioner v0.0.32 were not
// checked that way.
const (
	FluxVersion = "v2.9.5"

	IngressNginxChart      = "4.13.3"
	CertManagerChart       = "v1.21.2"
	LocalPathVersion       = "v0.0.32" // git tag of rancher/local-path-provisioner
	KubePrometheusChart    = "81.6.2"
	VictoriaLogsChart      = "0.11.9"
	NextcloudChart         = "7.0.2"
	OpenProjectChart       = "11.4.2"
	DefaultStorageClass    = "local-path"
	PublicIngressClass     = "nginx"
	AdminIngressClass      = "nginx-admin"
	PublicHTTPNodePort     = 30080
	PublicHTTPSNodePort    = 30443
	AdminHTTPPort          = 80
	AdminHTTPSPort         = 443
	FluxNamespace          = "flux-system"
	SOPSAgeSecret          = "sops-age"
	GitCredentialsSecret   = "flux-system"
	StateFileAppSecrets    = "gitops-secrets"
	StateFileSOPSAgeKey    = "sops-age-key"
	StateFileGitDeployKey  = "gitops-deploy-key"
	defaultSyncInterval    = "10m"
	defaultSourceInterval  = "1m"
	defaultReleaseInterval = "30m"
)

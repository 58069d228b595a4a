package spec

import "net/netip"

// APIVersion is the only spec version this build reads.
const APIVersion = "homelab/v1alpha1"

// Kind is the value of the spec's kind field.
const Kind = "Lab"

// Lab is the whole declarative description of a homelab: lab.yaml.
//
// Field comments are user documentation: the JSON Schema (homelab schema)
// and the reference docs are generated from them.
type Lab struct {
	// APIVersion must be homelab/v1alpha1.
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	// Kind must be Lab.
	Kind string `yaml:"kind" json:"kind"`
	// Name prefixes every object the lab owns (guests, bridges, namespaces,
	// firewall groups). Lowercase letters, digits and '-', at most 12 characters.
	Name string `yaml:"name" json:"name"`

	Host         Host         `yaml:"host" json:"host"`
	Networks     []Network    `yaml:"networks" json:"networks"`
	VPN          VPN          `yaml:"vpn" json:"vpn"`
	LoadBalancer LoadBalancer `yaml:"loadBalancer" json:"loadBalancer"`
	Manager      Manager      `yaml:"manager" json:"manager"`
	Cluster      Cluster      `yaml:"cluster" json:"cluster"`
	GitOps       GitOps       `yaml:"gitops" json:"gitops"`
}

// Provider names a target that builds the lab.
type Provider string

// The providers.
const (
	ProviderLocal   Provider = "local"
	ProviderProxmox Provider = "proxmox"
)

// Host is the one machine the lab runs on.
type Host struct {
	// Provider is local (network namespaces on this Linux machine) or proxmox.
	Provider Provider `yaml:"provider" json:"provider"`
	// Memory, Disk and Cores are the host's capacity, for the budget.
	Memory Size `yaml:"memory" json:"memory"`
	Disk   Size `yaml:"disk" json:"disk"`
	Cores  int  `yaml:"cores" json:"cores"`
	// Reserve is what the hypervisor keeps for itself (default 2GiB, 32GiB, 0 cores).
	Reserve Reserve `yaml:"reserve,omitempty" json:"reserve,omitempty"`
	// Proxmox is required when provider is proxmox.
	Proxmox *Proxmox `yaml:"proxmox,omitempty" json:"proxmox,omitempty"`
}

// Reserve is the part of the host that guests may not use.
type Reserve struct {
	Memory Size `yaml:"memory,omitempty" json:"memory,omitempty"`
	Disk   Size `yaml:"disk,omitempty" json:"disk,omitempty"`
	Cores  int  `yaml:"cores,omitempty" json:"cores,omitempty"`
}

// Proxmox is how to reach the Proxmox VE API. The token secret is never
// inline: it comes from TokenFile or the environment variable TokenEnv.
type Proxmox struct {
	// Endpoint is the API URL, for example https://pve.lan:8006.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Node is the Proxmox node name that hosts the guests.
	Node string `yaml:"node" json:"node"`
	// Storage holds guest disks (for example local-lvm).
	Storage string `yaml:"storage" json:"storage"`
	// ImageStorage holds downloaded images and templates (for example local).
	ImageStorage string `yaml:"imageStorage,omitempty" json:"imageStorage,omitempty"`
	// TokenID is user@realm!tokenname.
	TokenID string `yaml:"tokenID" json:"tokenID"`
	// TokenFile is a file holding the token secret (0600).
	TokenFile string `yaml:"tokenFile,omitempty" json:"tokenFile,omitempty"`
	// TokenEnv names an environment variable holding the token secret.
	TokenEnv string `yaml:"tokenEnv,omitempty" json:"tokenEnv,omitempty"`
	// CAFile verifies the API's TLS certificate against this CA.
	CAFile string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
	// Fingerprint pins the API certificate's SHA-256 fingerprint (AA:BB:...).
	Fingerprint string `yaml:"fingerprint,omitempty" json:"fingerprint,omitempty"`
	// SSH reaches the host for the few steps the API has no call for
	// (pct push / pct exec into containers).
	SSH *SSH `yaml:"ssh,omitempty" json:"ssh,omitempty"`
}

// SSH is an SSH login to the Proxmox host.
type SSH struct {
	User    string `yaml:"user,omitempty" json:"user,omitempty"`
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	// KeyFile is the private key; default is the SSH agent.
	KeyFile string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	// KnownHosts verifies the host key (default ~/.ssh/known_hosts).
	KnownHosts string `yaml:"knownHosts,omitempty" json:"knownHosts,omitempty"`
}

// Role is what a network is for.
type Role string

// The three network roles of the architecture.
const (
	RoleWAN   Role = "wan"   // net0: Internet side; only LB frontends and the VPN endpoint
	RoleAdmin Role = "admin" // net1: reachable only through the VPN
	RoleApps  Role = "apps"  // net2: application traffic between LB and workers
)

// Network is one virtual network (a bridge on the host).
type Network struct {
	// Name is how guests refer to this network (wan, admin, apps by default).
	Name string `yaml:"name" json:"name"`
	// Role is wan, admin or apps; each role appears exactly once.
	Role Role `yaml:"role" json:"role"`
	// Bridge is the host bridge (vmbr0, vmbr1, vmbr2 by default).
	Bridge string `yaml:"bridge,omitempty" json:"bridge,omitempty"`
	// CIDR is the subnet, for example 10.10.1.0/24.
	CIDR netip.Prefix `yaml:"cidr" json:"cidr"`
	// Gateway is the router on this network (the host for admin/apps).
	// Default: the first address of the CIDR.
	Gateway netip.Addr `yaml:"gateway,omitempty" json:"gateway,omitempty"`
	// VLAN tags the guests' interfaces on this network (0: untagged).
	VLAN int `yaml:"vlan,omitempty" json:"vlan,omitempty"`
}

// Guest is what every container and VM has: a Proxmox ID, a size, and
// addresses keyed by network name (assigned from the CIDRs when absent).
type Guest struct {
	// VMID is the Proxmox guest ID (100-999999999). Assigned when absent.
	VMID int `yaml:"vmid,omitempty" json:"vmid,omitempty"`
	// Cores, Memory and Disk size the guest.
	Cores  int  `yaml:"cores,omitempty" json:"cores,omitempty"`
	Memory Size `yaml:"memory,omitempty" json:"memory,omitempty"`
	Disk   Size `yaml:"disk,omitempty" json:"disk,omitempty"`
	// Addresses maps a network name to this guest's address on it.
	Addresses map[string]netip.Addr `yaml:"addresses,omitempty" json:"addresses,omitempty"`
}

// VPN is the WireGuard container: the only door to the admin network.
type VPN struct {
	Guest `yaml:",inline" json:",inline"`
	// ListenPort is the WireGuard UDP port on the wan network (default 51820).
	ListenPort int `yaml:"listenPort,omitempty" json:"listenPort,omitempty"`
	// Tunnel is the subnet of the tunnel (default 10.99.0.0/24); the server
	// takes its first address.
	Tunnel netip.Prefix `yaml:"tunnel,omitempty" json:"tunnel,omitempty"`
	// Endpoint is host:port that clients dial (default the VPN's wan address).
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	// DNS is pushed to clients (optional).
	DNS []netip.Addr `yaml:"dns,omitempty" json:"dns,omitempty"`
	// Peers are the admins' devices. Keys are generated and kept encrypted in
	// the state folder; more can be added with "homelab vpn peer add".
	Peers []Peer `yaml:"peers,omitempty" json:"peers,omitempty"`
}

// Peer is one VPN client.
type Peer struct {
	Name string `yaml:"name" json:"name"`
	// Address in the tunnel subnet (assigned when absent).
	Address netip.Addr `yaml:"address,omitempty" json:"address,omitempty"`
	// PublicKey of a key the user made themselves; when absent homelab
	// generates the key pair and writes a complete client config.
	PublicKey string `yaml:"publicKey,omitempty" json:"publicKey,omitempty"`
}

// LoadBalancer is the L4 load balancer container in front of the cluster.
type LoadBalancer struct {
	Guest `yaml:",inline" json:",inline"`
	// AdminPort serves /metrics, /status and the status page on the LB's
	// apps address only (default 8404).
	AdminPort int `yaml:"adminPort,omitempty" json:"adminPort,omitempty"`
	// Frontends are the ports the LB listens on (default 80 and 443 to the
	// workers' ingress).
	Frontends []Frontend `yaml:"frontends" json:"frontends"`
	// MaxConnections caps concurrent connections in total (default 20000).
	MaxConnections int `yaml:"maxConnections,omitempty" json:"maxConnections,omitempty"`
	// PerSourceLimit caps concurrent connections per client address (default 256).
	PerSourceLimit int `yaml:"perSourceLimit,omitempty" json:"perSourceLimit,omitempty"`
	// PerSourceRate caps new connections per second per client address (default 100).
	PerSourceRate int `yaml:"perSourceRate,omitempty" json:"perSourceRate,omitempty"`
}

// Frontend is one listener of the load balancer.
type Frontend struct {
	Name string `yaml:"name" json:"name"`
	// Port the LB listens on, on its wan address.
	Port int `yaml:"port" json:"port"`
	// Protocol is tcp (default) or udp.
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	// Backends says which guests receive the traffic.
	Backends BackendRef `yaml:"backends" json:"backends"`
	// Balance is roundrobin (default), leastconn, p2c or hash (client address).
	Balance string `yaml:"balance,omitempty" json:"balance,omitempty"`
	// HealthCheck probes each backend.
	HealthCheck *HealthCheck `yaml:"healthCheck,omitempty" json:"healthCheck,omitempty"`
	// ProxyProtocol is "", v1 or v2: sent to backends so they see the client.
	ProxyProtocol string `yaml:"proxyProtocol,omitempty" json:"proxyProtocol,omitempty"`
	// Allow and Deny are client CIDR lists (Deny wins; empty Allow allows all).
	Allow []netip.Prefix `yaml:"allow,omitempty" json:"allow,omitempty"`
	Deny  []netip.Prefix `yaml:"deny,omitempty" json:"deny,omitempty"`
}

// BackendRef selects backends by role and port.
type BackendRef struct {
	// Role is worker or controlplane.
	Role string `yaml:"role" json:"role"`
	// Port on the backend.
	Port int `yaml:"port" json:"port"`
	// Network the backends are reached on (default apps for workers, admin
	// for control planes).
	Network string `yaml:"network,omitempty" json:"network,omitempty"`
}

// HealthCheck is an active probe of each backend.
type HealthCheck struct {
	// Type is tcp (default), http or https.
	Type string `yaml:"type,omitempty" json:"type,omitempty"`
	// Path for http(s) checks (default /healthz).
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// ExpectStatus for http(s) checks (default 200).
	ExpectStatus int      `yaml:"expectStatus,omitempty" json:"expectStatus,omitempty"`
	Interval     Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	Timeout      Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	Rise         int      `yaml:"rise,omitempty" json:"rise,omitempty"`
	Fall         int      `yaml:"fall,omitempty" json:"fall,omitempty"`
}

// Manager is the admin VM on net1 with talosctl, kubectl, flux and k9s.
type Manager struct {
	Guest `yaml:",inline" json:",inline"`
	// SSHKeys are public keys allowed to log in as the admin user.
	SSHKeys []string `yaml:"sshKeys,omitempty" json:"sshKeys,omitempty"`
	// User is the admin login (default admin).
	User string `yaml:"user,omitempty" json:"user,omitempty"`
	// Image is the Debian cloud image URL (default Debian 12 genericcloud amd64).
	Image string `yaml:"image,omitempty" json:"image,omitempty"`
	// Tools pins the versions installed by cloud-init.
	Tools Tools `yaml:"tools,omitempty" json:"tools,omitempty"`
}

// Tools are the versions of the admin tools on the manager VM.
type Tools struct {
	Talosctl string `yaml:"talosctl,omitempty" json:"talosctl,omitempty"`
	Kubectl  string `yaml:"kubectl,omitempty" json:"kubectl,omitempty"`
	Flux     string `yaml:"flux,omitempty" json:"flux,omitempty"`
	K9s      string `yaml:"k9s,omitempty" json:"k9s,omitempty"`
}

// Cluster is the Talos Linux Kubernetes cluster.
type Cluster struct {
	// Name of the Kubernetes cluster (default: the lab's name).
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// TalosVersion, for example v1.13.9.
	TalosVersion string `yaml:"talosVersion" json:"talosVersion"`
	// KubernetesVersion, for example v1.36.1; must be supported by TalosVersion.
	KubernetesVersion string `yaml:"kubernetesVersion" json:"kubernetesVersion"`
	// Endpoint is the Kubernetes API URL (default https://<first control
	// plane admin address>:6443).
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	// InstallDisk is the disk Talos installs to (default /dev/sda).
	InstallDisk string `yaml:"installDisk,omitempty" json:"installDisk,omitempty"`
	// Extensions are Image Factory system extensions, for example
	// siderolabs/qemu-guest-agent.
	Extensions []string `yaml:"extensions,omitempty" json:"extensions,omitempty"`
	// ControlPlanes and Workers are the node pools.
	ControlPlanes NodePool `yaml:"controlPlanes" json:"controlPlanes"`
	Workers       NodePool `yaml:"workers" json:"workers"`
}

// NodePool is a set of identical Talos nodes.
type NodePool struct {
	// Count of nodes (control planes: 1, 3 or 5 recommended).
	Count int `yaml:"count" json:"count"`
	// VMIDStart numbers the pool's guests VMIDStart, VMIDStart+1, ...
	VMIDStart int  `yaml:"vmidStart,omitempty" json:"vmidStart,omitempty"`
	Cores     int  `yaml:"cores" json:"cores"`
	Memory    Size `yaml:"memory" json:"memory"`
	Disk      Size `yaml:"disk" json:"disk"`
	// Networks the nodes attach to (control planes: admin; workers: admin, apps).
	Networks []string `yaml:"networks,omitempty" json:"networks,omitempty"`
	// Addresses maps a network name to the nodes' addresses, in order
	// (assigned when absent or shorter than Count).
	Addresses map[string][]netip.Addr `yaml:"addresses,omitempty" json:"addresses,omitempty"`
}

// GitOps is how the cluster is reconciled from Git.
type GitOps struct {
	// Engine is flux.
	Engine string `yaml:"engine,omitempty" json:"engine,omitempty"`
	// Repository is the Git URL (default: hosted on the manager VM).
	Repository string `yaml:"repository,omitempty" json:"repository,omitempty"`
	// Branch (default main).
	Branch string `yaml:"branch,omitempty" json:"branch,omitempty"`
	// Apps deployed through GitOps.
	Apps []App `yaml:"apps,omitempty" json:"apps,omitempty"`
}

// App is one application reconciled by GitOps.
type App struct {
	// Name is nextcloud, openproject or another app with a template.
	Name string `yaml:"name" json:"name"`
	// Host is the DNS name the app answers to through the LB.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// Storage is the size of its persistent volume.
	Storage Size `yaml:"storage,omitempty" json:"storage,omitempty"`
}

package spec

import "strings"

// Reference returns the commented reference lab.yaml for a provider: the
// seed architecture of the design (one 16GiB/500GiB host, three networks,
// VPN and load balancer containers, a manager VM and a small Talos cluster
// running Nextcloud and OpenProject). homelab init writes it; a newcomer
// should learn the architecture by reading it.
func Reference(p Provider) []byte {
	host := referenceLocalHost
	if p == ProviderProxmox {
		host = referenceProxmoxHost
	}
	return []byte(strings.Replace(referenceLab, "{{host}}", host, 1))
}

const referenceLocalHost = `host:
  # local builds the whole topology on this Linux machine with network
  # namespaces, bridges, veth pairs, real nftables and real WireGuard; the
  # Talos nodes are stand-ins that serve the ports a real node serves.
  # Switch to proxmox (homelab init --provider proxmox) for the real lab.
  provider: local
  # The machine the lab is sized for: the budget (homelab validate) checks
  # every guest against these numbers minus the reserve below.
  memory: 16GiB
  disk: 500GiB
  cores: 4
  # What the hypervisor keeps for itself (these are the defaults).
  reserve:
    memory: 2GiB
    disk: 32GiB
`

const referenceProxmoxHost = `host:
  # proxmox builds the real lab on a Proxmox VE host through its API.
  provider: proxmox
  # The machine the lab is sized for: the budget (homelab validate) checks
  # every guest against these numbers minus the reserve below.
  memory: 16GiB
  disk: 500GiB
  cores: 4
  # What Proxmox itself keeps (these are the defaults).
  reserve:
    memory: 2GiB
    disk: 32GiB
  proxmox:
    # The API URL. Always https; Proxmox listens on 8006.
    endpoint: https://pve.lan:8006
    # The node name shown in the Proxmox UI (Datacenter > your node).
    node: pve
    # Where guest disks go, and where images and templates are downloaded.
    storage: local-lvm
    imageStorage: local
    # An API token: create it under Datacenter > Permissions > API Tokens.
    # The secret NEVER goes in this file: export it in the environment
    # variable named by tokenEnv, or put it in a file (mode 0600) and write
    # tokenFile: ~/.config/homelab/pve-token instead.
    tokenID: root@pam!homelab
    tokenEnv: PVE_TOKEN
    # TLS is always verified. A fresh Proxmox has a self-signed certificate:
    # trust its CA (caFile: /path/to/pve-root-ca.pem, copied from
    # /etc/pve/pve-root-ca.pem) or pin its SHA-256 fingerprint (shown under
    # System > Certificates), for example:
    # fingerprint: AA:BB:...:FF
`

const referenceLab = `# lab.yaml: one file describes the whole homelab.
#
#   homelab validate    check it and print the capacity budget
#   homelab render      write every config file it implies
#   homelab diagram     draw it
#
# The architecture, in one picture:
#
#   Internet
#      |
#   wan (net0) -------+------------------------+
#                     |                        |
#            vpn (LXC) :51820/udp     lb (LXC) :80 :443
#                     |                        |
#   admin (net1) -----+-- manager VM           |   apps (net2)
#   (VPN only)        +-- control plane        |
#                     +-- workers -------------+
#
# Default deny between zones: from the Internet only the LB frontends and
# the VPN port are reachable; the admin network (Talos API, Kubernetes API,
# SSH, dashboards) only through the VPN; the LB reaches the workers' ingress
# ports on the apps network and nothing else.
#
# Sizes are written with binary units (512MiB, 4GiB, 1TiB). Anything left
# out gets the default named in its comment.

apiVersion: homelab/v1alpha1
kind: Lab
# name prefixes every guest, bridge and namespace the lab owns
# (lab-vpn, lab-cp-1, ...): lowercase letters, digits and '-', at most 12.
name: lab

{{host}}
# Three virtual networks, one bridge each on the host. Roles are fixed:
# wan, admin and apps each appear exactly once. Gateways default to the
# first address of the CIDR (for admin and apps: the host's own bridge
# address, which routes and NATs the guests' Internet egress).
networks:
  # net0: your home LAN, bridged to the physical NIC. Only the load
  # balancer's frontends and the VPN's UDP port face it.
  - name: wan
    role: wan
    bridge: vmbr0
    cidr: 192.168.1.0/24
    gateway: 192.168.1.1    # your home router
  # net1: the admin network. Talos and Kubernetes APIs, SSH to the manager,
  # dashboards. Nothing on wan can reach it; VPN peers can.
  - name: admin
    role: admin
    bridge: vmbr1
    cidr: 10.10.1.0/24
  # net2: application traffic from the load balancer to the workers'
  # ingress ports, kept apart from the admin network.
  - name: apps
    role: apps
    bridge: vmbr2
    cidr: 10.10.2.0/24

# Addresses left out are assigned deterministically: on each network a
# guest gets the network address plus an offset (VPN .2, LB .3, manager .5,
# control planes .10, .11, ..., workers .20, .21, ...), skipping addresses
# given explicitly. VMIDs default to VPN 100, LB 101, manager 110, control
# planes 200+, workers 210+.

# The WireGuard VPN container: the only door to the admin network.
# 1 core / 256MiB / 2GiB is plenty: WireGuard runs in the kernel (or as a
# small userspace daemon) and moves an admin's traffic, not the apps'.
vpn:
  cores: 1
  memory: 256MiB
  disk: 2GiB
  addresses:
    # On wan, pick a fixed address high in your LAN: home routers hand out
    # low addresses by DHCP. Forward UDP 51820 from your router to it.
    # The admin address (.2) is assigned.
    wan: 192.168.1.240
  listenPort: 51820         # default
  tunnel: 10.99.0.0/24      # default; the server is .1, peers .2, .3, ...
  # endpoint: vpn.example.org:51820   # what clients dial; default wan address:port
  # Each peer is one of your devices. homelab generates its keys (kept
  # encrypted in the state folder) and writes a client config that routes
  # only the admin network through the tunnel (split tunnel).
  peers:
    - name: laptop

# The load balancer container: a small L4 load balancer we build ourselves,
# in front of the cluster like a cloud provider's. Same size as the VPN:
# it copies bytes between connections and keeps little state.
loadBalancer:
  cores: 1
  memory: 256MiB
  disk: 2GiB
  addresses:
    wan: 192.168.1.241      # forward TCP 80 and 443 from your router here
    # its apps address (.3) is assigned; it gets no admin address on purpose
  adminPort: 8404           # /metrics and status page, on the apps address only
  # Frontends listen on the LB's wan address. Only client-facing ports
  # belong here: exposing 22, 6443, 50000 or a dashboard port is an error.
  frontends:
    - name: http
      port: 80
      backends: {role: worker, port: 30080}   # the ingress NodePort, over apps
      proxyProtocol: v2     # the ingress sees the real client address
      healthCheck: {type: tcp}
    - name: https
      port: 443
      backends: {role: worker, port: 30443}
      proxyProtocol: v2
      healthCheck: {type: tcp}
  # Limits (defaults): total connections, per client address, and new
  # connections per second per client address.
  maxConnections: 20000
  perSourceLimit: 256
  perSourceRate: 100

# The manager VM on the admin network: talosctl, kubectl, flux and k9s at
# pinned versions, and the GitOps repository. Every dev tool lives here, so
# any computer with the VPN and SSH can administer the lab.
# 1 core / 1GiB / 16GiB: a Debian cloud image running CLI tools and git.
manager:
  cores: 1
  memory: 1GiB
  disk: 16GiB
  user: admin               # default
  # Public keys allowed to log in as user (paste your ~/.ssh/id_ed25519.pub):
  # sshKeys:
  #   - ssh-ed25519 AAAAC3Nz... you@laptop
  # tools default to talosctl = talosVersion, kubectl = kubernetesVersion,
  # flux v2.9.5, k9s v0.50.16.

# The Talos Linux Kubernetes cluster.
cluster:
  talosVersion: v1.13.9
  # Must be supported by the Talos version (Talos v1.13 supports v1.31 to
  # v1.36); homelab validate checks it against Talos's own table.
  kubernetesVersion: v1.36.3
  # endpoint defaults to https://<first control plane's admin address>:6443
  installDisk: /dev/sda     # default: the first SCSI disk on Proxmox
  # Image Factory system extensions baked into the Talos image.
  extensions:
    - siderolabs/qemu-guest-agent
  # One control plane: 2 cores and 2GiB are Talos's minimum; 3GiB leaves
  # room for etcd and the API server. An odd count keeps etcd's quorum:
  # use 3 once the lab moves to a bigger host.
  controlPlanes:
    count: 1
    cores: 2
    memory: 3GiB
    disk: 20GiB
    networks: [admin]       # default
  # Two workers carry the apps (Nextcloud, OpenProject and their
  # databases). 4GiB each is what those two need with headroom; 80GiB of
  # disk each holds images and the apps' persistent volumes.
  workers:
    count: 2
    cores: 2
    memory: 4GiB
    disk: 80GiB
    networks: [admin, apps] # default: admin for Talos, apps for ingress
  # Budget: 1+1+1+2+2x2 = 9 vCPUs on 4 cores (vCPUs are time-shared; a lab
  # idles most of the time), 12.5GiB of the 14GiB left after the reserve,
  # 200GiB of 468GiB of disk.

# GitOps: Flux on the cluster reconciles everything below from Git.
gitops:
  engine: flux              # the only engine
  branch: main              # default
  # repository defaults to a Git repository hosted on the manager VM.
  apps:
    - name: nextcloud       # files, calendars, contacts
      storage: 20GiB
    - name: openproject     # project management
      storage: 10GiB
    # host defaults to <app>.<lab name>.home.arpa
`

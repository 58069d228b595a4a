// Package standin is a stand-in for a Talos Linux node, used by the local
// provider where no virtual machines exist. A Node serves on the network
// what a Talos node serves: the Talos API (gRPC over TLS on port 50000,
// with the machinery's protocol types), the Kubernetes API health
// endpoints on control planes (HTTPS on port 6443, client certificates
// required) and, on workers, the ingress ports answering HTTP behind the
// load balancer's PROXY protocol.
//
// Like Talos, a stand-in started without certificates serves an ephemeral
// self-signed one in maintenance mode (clients connect as talosctl
// --insecure does) and, once a machine config is applied, certificates of
// the lab: its Talos API certificate issued from machine.ca (control
// planes) or signed by a control plane's trustd with machine.token
// (workers, whose config lacks machine.ca's key), and on control planes
// its Kubernetes API certificate and the admin kubeconfig from
// cluster.ca. Clients are then verified against those CAs. Certificates
// given at start (Certs) are kept instead.
//
// An Upgrade "reboots" for RebootDelay and comes back at the installer
// image's tag. As on Talos with the Image Factory, the installed image's
// schematic (machine.install.image when first configured, then each
// upgrade's image) decides the system extensions: an upgrade changing it
// is accepted, as Talos accepts it, and recorded as such in its event.
// Events record what happened, for tests: among them healthy, when the
// node is back from an upgrade or a reboot with healthy services.
//
// It is not Talos and not Kubernetes: every response, version string and
// log line says it is a stand-in.
//
// It runs as "homelab standin", inside the homelab binary, not as a
// separate small binary: the gRPC and machinery protocol packages it needs
// make up most of a standalone build anyway (22 MB against 25 MB for the
// whole homelab binary, measured 2026-11-23), and every lab process runs
// the same executable, so its code pages are shared. Each stand-in adds
// about 3-4 MiB of private memory (RSS 17-21 MiB, mostly shared text; see
// TestMemory), well within the lab's 150 MiB budget.
package standin

// Package lb is the edge load balancer: a layer 4 (TCP and UDP) proxy that
// routes by port or by TLS SNI without terminating TLS, balances across
// health-checked backend servers, speaks the PROXY protocol both ways,
// protects itself with per-source limits, reloads its configuration without
// dropping connections and exposes Prometheus metrics and a status page.
//
// Server is the daemon; Config is its YAML configuration (Parse, LoadFile).
// The package depends on nothing from the rest of homelab, so the small
// cmd/homelab-lb binary stays small.
package lb

// Package bootstrap takes freshly started Talos nodes to a running
// Kubernetes cluster with machinery's own client: it waits for each node's
// Talos API, applies the rendered machine config to nodes still in
// maintenance mode, bootstraps etcd exactly once on the first control
// plane, stores the kubeconfig and talosconfig in the encrypted state
// folder and waits, for a bounded time, for the cluster to pass health
// checks of its own, reporting what is not healthy.
//
// Every connection goes through a Dialer, so the same flow runs through
// the in-process WireGuard tunnel (package tunnel) or directly from the
// admin network.
package bootstrap

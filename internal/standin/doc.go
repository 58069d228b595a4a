// Package standin is a stand-in for a Talos Linux node, used by the local
// provider where no virtual machines exist. A Node serves on the network
// what a Talos node serves: the Talos API (gRPC over TLS on port 50000,
// with the machinery's protocol types), the Kubernetes API health
// endpoints on control planes (HTTPS on port 6443, client certificates
// required) and, on workers, the ingress ports answering HTTP behind the
// load balancer's PROXY protocol.
//
// It is not Talos and not Kubernetes: every response, version string and
// log line says it is a stand-in.
package standin

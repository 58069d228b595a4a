// Package spec owns lab.yaml: its Go types (the schema), strict loading with
// file:line:col messages, defaults and address assignment, and validation
// (errors and warnings, including the capacity budget and the security
// policy). Everything downstream works from a *Lab that went through Load.
//
// Loading happens in four steps, all in Parse:
//
//  1. goccy/go-yaml parses the text into a syntax tree (syntax errors stop
//     here, with their position);
//  2. a strict decoder walks the tree into a Lab by reflection, rejecting
//     unknown keys and wrong types, and keeps going so that every problem is
//     reported at once; it records where each YAML path sits in the file;
//  3. setDefaults fills what the spec left out and assigns addresses and
//     VMIDs (below);
//  4. validate checks the result; each finding is placed by its YAML path,
//     so checks on the typed value still point at a line and column.
//
// Defaults: networks wan, admin, apps (192.168.1.0/24, 10.10.1.0/24,
// 10.10.2.0/24) on bridges vmbr0, vmbr1, vmbr2 with the gateway on the
// first address; host reserve 2GiB memory and 32GiB disk; VPN on UDP 51820
// with tunnel 10.99.0.0/24 (server .1, peers .2 and up, in order); load
// balancer status on 8404 and frontends http 80 and https 443 to the
// workers' 30080 and 30443 with PROXY protocol v2 and a TCP health check;
// cluster named after the lab, endpoint https://<first control plane's
// admin address>:6443, install disk /dev/sda, extension
// siderolabs/qemu-guest-agent; manager user admin with talosctl and kubectl
// at the cluster's versions, flux v2.9.5 and k9s v0.50.16.
//
// Addresses (deterministic, no state): on each network a guest without an
// address gets the network address plus an offset by role (VPN 2, load
// balancer 3, manager 5, control plane i 10+i, worker i 20+i), or the next
// free address after it; addresses written in the spec, the gateway, the
// network and broadcast addresses are never handed out. The VPN attaches
// to wan and admin, the load balancer to wan and apps, the manager and the
// control planes to admin, the workers to admin and apps. VMIDs: VPN 100,
// load balancer 101, manager 110, control planes 200 and up, workers 210
// and up.
package spec

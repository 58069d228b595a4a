// Package gitrepo owns the lab's Git repository on the manager VM: it
// builds commits from rendered artifacts and pushes them over SSH without
// a git binary on the operator's machine (Push), and it serves bare
// repositories over SSH to git clients (Server), as the local provider's
// stand-in for the manager VM.
//
// Push speaks git's own formats: loose object hashing (blob, tree,
// commit), a version 2 packfile, and the receive-pack protocol over
// pkt-lines. It needs only a net.Conn to the server, so it works through
// homelab's in-process WireGuard tunnel. The server runs the system's
// git upload-pack and receive-pack.
package gitrepo

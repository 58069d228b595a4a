// Package secrets owns the lab's encrypted state folder (.homelab beside
// lab.yaml): the secrets bundle (Talos CAs and tokens, WireGuard keys) and
// other sensitive blobs such as the kubeconfig, each an age-encrypted file
// (0600) in a 0700 folder. The age identity lives outside the lab folder
// ($HOMELAB_IDENTITY, else ~/.config/homelab/identity.txt). Nothing in this
// package prints or returns key material in errors.
package secrets

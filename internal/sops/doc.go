// Package sops encrypts and decrypts YAML documents in the file format of
// SOPS (github.com/getsops/sops, v3), with age keys only, so that Flux's
// kustomize-controller (which links sops v3) and the sops command decrypt
// what homelab writes, and homelab reads what they write.
//
// The format, as sops v3 writes it:
//
//   - Keys stay in the clear. Each value selected by the file's rules (for
//     Kubernetes Secrets, encrypted_regex ^(data|stringData)$: every value
//     under a key matching the expression) becomes
//     ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<str|int|float|bool>],
//     AES-256-GCM with a 32-byte random IV under the file's random 256-bit
//     data key, the additional data being the value's key path joined with
//     ":" plus a final ":" (list items add nothing to the path). Empty
//     strings stay empty.
//   - sops.age lists, per recipient, the data key encrypted with age to that
//     recipient, ASCII-armored (enc) beside the recipient (recipient).
//   - sops.mac is the upper-case hex SHA-512 of every value of every
//     document in order (null values and comments left out; booleans as
//     True/False, floats without trailing zeros), encrypted like a value
//     with the data key and lastmodified (RFC 3339) as additional data. With
//     mac_only_encrypted the hash covers only the encrypted values and
//     starts with SHA-256("sops").
//   - lastmodified, the rule (encrypted_regex, ...), version.
//
// In a multi-document file every document carries the same sops key and
// the MAC covers all of them; Flux decrypts each object on its own, so
// homelab writes one Secret per file.
//
// Not supported (an error says so): PGP and cloud KMS keys, Shamir key
// groups, comment-based rules, YAML aliases. Comments are not in the MAC;
// Encrypt drops them (sops would encrypt those under encrypted keys) and
// Decrypt keeps them as they are (encrypted ones stay encrypted).
//
// Errors name key paths and recipients, never values or keys.
package sops

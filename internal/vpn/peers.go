package vpn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"regexp"
	"slices"
	"time"
)

// PeersFile is the state-folder file (encrypted) holding the peers added
// with "homelab vpn peer add".
const PeersFile = "vpn-peers"

// FileStore is what the peer list needs of the encrypted state folder
// (secrets.Store has it). GetFile's error matches fs.ErrNotExist when the
// file is absent.
type FileStore interface {
	GetFile(name string) ([]byte, error)
	PutFile(name string, data []byte) error
}

// StoredPeer is a peer added outside lab.yaml, with its key pair.
type StoredPeer struct {
	Name       string
	Address    netip.Addr
	PublicKey  Key
	PrivateKey PrivateKey
	Created    time.Time
}

// storedPeerJSON is StoredPeer on disk (inside the age-encrypted file).
type storedPeerJSON struct {
	Name       string     `json:"name"`
	Address    netip.Addr `json:"address"`
	PublicKey  string     `json:"publicKey"`
	PrivateKey string     `json:"privateKey"`
	Created    time.Time  `json:"created"`
}

type peersJSON struct {
	Version int              `json:"version"`
	Peers   []storedPeerJSON `json:"peers"`
}

// LabInfo is what peer management needs to know about the lab, taken
// from the spec and the secrets bundle by the caller.
type LabInfo struct {
	// Tunnel is the tunnel subnet; Server the server's address in it.
	Tunnel netip.Prefix
	Server netip.Addr
	// SpecPeers maps the names of lab.yaml's peers to their addresses.
	SpecPeers map[string]netip.Addr
	// ServerPublicKey and Endpoint (host:port) are what clients dial.
	ServerPublicKey Key
	Endpoint        string
	// Admin is the admin network: the only subnet clients route through
	// the tunnel (split tunnel).
	Admin netip.Prefix
	DNS   []netip.Addr
}

// ClientKeepalive keeps clients behind NAT reachable (seconds).
const ClientKeepalive = 25

var peerName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// ListPeers returns the stored peers, oldest first.
func ListPeers(store FileStore) ([]StoredPeer, error) {
	data, err := store.GetFile(PeersFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading vpn peers: %w", err)
	}
	var f peersJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("reading vpn peers: %s is corrupt: %w", PeersFile, err)
	}
	out := make([]StoredPeer, 0, len(f.Peers))
	for _, p := range f.Peers {
		pub, err := ParseKey(p.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("reading vpn peers: peer %s: public key: %w", p.Name, err)
		}
		priv, err := ParseKey(p.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("reading vpn peers: peer %s: private key: %w", p.Name, err)
		}
		out = append(out, StoredPeer{Name: p.Name, Address: p.Address, PublicKey: pub, PrivateKey: PrivateKey(priv), Created: p.Created})
	}
	return out, nil
}

func savePeers(store FileStore, peers []StoredPeer) error {
	f := peersJSON{Version: 1, Peers: []storedPeerJSON{}}
	for _, p := range peers {
		f.Peers = append(f.Peers, storedPeerJSON{
			Name: p.Name, Address: p.Address, PublicKey: p.PublicKey.String(),
			PrivateKey: p.PrivateKey.Base64(), Created: p.Created.UTC(),
		})
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("saving vpn peers: %w", err)
	}
	if err := store.PutFile(PeersFile, data); err != nil {
		return fmt.Errorf("saving vpn peers: %w", err)
	}
	return nil
}

// ExtraPeers returns the stored peers as server-side [Peer] entries (the
// public key and the peer's tunnel address), for render and the local
// provider to add to the server's config.
func ExtraPeers(store FileStore) ([]Peer, error) {
	stored, err := ListPeers(store)
	if err != nil {
		return nil, err
	}
	out := make([]Peer, 0, len(stored))
	for _, p := range stored {
		out = append(out, Peer{Name: p.Name, PublicKey: p.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.Address, p.Address.BitLen())}})
	}
	return out, nil
}

// NameError is a peer name that cannot be used; Hint says what to do.
type NameError struct {
	msg, hint string
}

func (e *NameError) Error() string { return e.msg }

// Hint is a line telling the user how to fix the problem.
func (e *NameError) Hint() string { return e.hint }

// AddPeer generates a key pair for a new peer, gives it the next free
// tunnel address and stores it; it returns the stored peer.
func AddPeer(store FileStore, lab LabInfo, name string, now time.Time) (StoredPeer, error) {
	if !peerName.MatchString(name) {
		return StoredPeer{}, &NameError{
			msg:  fmt.Sprintf("adding vpn peer: %q is not a valid peer name", name),
			hint: "use 1-32 lowercase letters, digits and dashes, such as laptop or alice-phone",
		}
	}
	if _, ok := lab.SpecPeers[name]; ok {
		return StoredPeer{}, &NameError{
			msg:  fmt.Sprintf("adding vpn peer: %s is already a peer in lab.yaml", name),
			hint: "pick another name; lab.yaml's peers get their client configs from homelab render",
		}
	}
	peers, err := ListPeers(store)
	if err != nil {
		return StoredPeer{}, err
	}
	taken := map[netip.Addr]bool{lab.Server: true}
	for _, a := range lab.SpecPeers {
		taken[a] = true
	}
	for _, p := range peers {
		if p.Name == name {
			return StoredPeer{}, &NameError{
				msg:  fmt.Sprintf("adding vpn peer: %s exists already (added %s)", name, p.Created.Format(time.DateOnly)),
				hint: fmt.Sprintf("remove it first with homelab vpn peer remove %s, or pick another name", name),
			}
		}
		taken[p.Address] = true
	}
	addr, err := nextFree(lab.Tunnel, taken)
	if err != nil {
		return StoredPeer{}, err
	}
	priv, pub, err := GenerateKey()
	if err != nil {
		return StoredPeer{}, err
	}
	p := StoredPeer{Name: name, Address: addr, PublicKey: pub, PrivateKey: priv, Created: now}
	if err := savePeers(store, append(peers, p)); err != nil {
		return StoredPeer{}, err
	}
	return p, nil
}

// nextFree is the first address of tunnel from .2 on that is not taken,
// never the network or broadcast address.
func nextFree(tunnel netip.Prefix, taken map[netip.Addr]bool) (netip.Addr, error) {
	tunnel = tunnel.Masked()
	if !tunnel.IsValid() {
		return netip.Addr{}, errors.New("adding vpn peer: the lab has no vpn tunnel subnet")
	}
	a := tunnel.Addr().Next()
	for ; a.IsValid() && tunnel.Contains(a); a = a.Next() {
		if a == tunnel.Addr().Next() || taken[a] {
			continue // .1 is the server's by convention, even if moved
		}
		if n := a.Next(); a.Is4() && (!n.IsValid() || !tunnel.Contains(n)) {
			break // the broadcast address
		}
		return a, nil
	}
	return netip.Addr{}, &NameError{
		msg:  fmt.Sprintf("adding vpn peer: no free address left in the tunnel subnet %s", tunnel),
		hint: "remove a peer you no longer use, or make vpn.tunnel larger in lab.yaml",
	}
}

// RemovePeer deletes a stored peer. Peers of lab.yaml are not stored
// here: they are removed from the spec.
func RemovePeer(store FileStore, lab LabInfo, name string) error {
	if _, ok := lab.SpecPeers[name]; ok {
		return &NameError{
			msg:  fmt.Sprintf("removing vpn peer: %s is declared in lab.yaml", name),
			hint: "delete it from vpn.peers in lab.yaml, then run homelab apply",
		}
	}
	peers, err := ListPeers(store)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(peers, func(p StoredPeer) bool { return p.Name == name })
	if i < 0 {
		return &NameError{
			msg:  fmt.Sprintf("removing vpn peer: no peer named %s", name),
			hint: "homelab vpn peer list shows the peers",
		}
	}
	return savePeers(store, slices.Delete(peers, i, i+1))
}

// ClientConfig is the wg-quick config of a stored peer: a split tunnel
// that routes only the admin network through the VPN.
func ClientConfig(lab LabInfo, p StoredPeer) *Config {
	return &Config{
		Interface: Interface{
			PrivateKey: p.PrivateKey,
			Addresses:  []netip.Prefix{netip.PrefixFrom(p.Address, p.Address.BitLen())},
			DNS:        lab.DNS,
		},
		Peers: []Peer{{
			Name:                "server",
			PublicKey:           lab.ServerPublicKey,
			Endpoint:            lab.Endpoint,
			AllowedIPs:          []netip.Prefix{lab.Admin.Masked()},
			PersistentKeepalive: ClientKeepalive,
		}},
	}
}

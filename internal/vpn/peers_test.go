package vpn

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/secrets"
)

// memStore is an in-memory FileStore.
type memStore map[string][]byte

func (m memStore) GetFile(name string) ([]byte, error) {
	d, ok := m[name]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return d, nil
}

func (m memStore) PutFile(name string, data []byte) error {
	m[name] = append([]byte(nil), data...)
	return nil
}

func testLab(t *testing.T) LabInfo {
	_, serverPub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return LabInfo{
		Tunnel:          netip.MustParsePrefix("10.99.0.0/29"),
		Server:          netip.MustParseAddr("10.99.0.1"),
		SpecPeers:       map[string]netip.Addr{"laptop": netip.MustParseAddr("10.99.0.2"), "phone": netip.MustParseAddr("10.99.0.4")},
		ServerPublicKey: serverPub,
		Endpoint:        "192.168.1.2:51820",
		Admin:           netip.MustParsePrefix("10.10.1.0/24"),
	}
}

func TestAddListRemovePeers(t *testing.T) {
	lab := testLab(t)
	store := memStore{}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

	// /29: .1 server, .2 and .4 spec peers, .7 broadcast: free are .3, .5, .6.
	var got []string
	for _, name := range []string{"tablet", "desk", "spare"} {
		p, err := AddPeer(store, lab, name, now)
		if err != nil {
			t.Fatalf("AddPeer(%s): %v", name, err)
		}
		got = append(got, name+"="+p.Address.String())
	}
	if want := "tablet=10.99.0.3 desk=10.99.0.5 spare=10.99.0.6"; strings.Join(got, " ") != want {
		t.Errorf("addresses = %s, want %s", strings.Join(got, " "), want)
	}

	errTests := []struct{ name, want string }{
		{"full", "no free address left in the tunnel subnet 10.99.0.0/29"},
		{"Bad_Name", "is not a valid peer name"},
		{"laptop", "already a peer in lab.yaml"},
		{"desk", "desk exists already"},
	}
	for _, tt := range errTests {
		_, err := AddPeer(store, lab, tt.name, now)
		var ne *NameError
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &ne) || ne.Hint() == "" {
			t.Errorf("AddPeer(%s) error = %v, want a NameError with a hint containing %q", tt.name, err, tt.want)
		}
	}

	if err := RemovePeer(store, lab, "desk"); err != nil {
		t.Fatalf("RemovePeer: %v", err)
	}
	if err := RemovePeer(store, lab, "laptop"); err == nil || !strings.Contains(err.Error(), "declared in lab.yaml") {
		t.Errorf("RemovePeer(spec peer) error = %v", err)
	}
	if err := RemovePeer(store, lab, "nobody"); err == nil {
		t.Error("RemovePeer(unknown): no error")
	}
	// The freed address is reused.
	p, err := AddPeer(store, lab, "desk2", now)
	if err != nil || p.Address.String() != "10.99.0.5" {
		t.Errorf("AddPeer after remove = %v, %v, want 10.99.0.5", p.Address, err)
	}

	extra, err := ExtraPeers(store)
	if err != nil {
		t.Fatal(err)
	}
	var ex []string
	for _, p := range extra {
		ex = append(ex, p.Name+"="+joinPrefixes(p.AllowedIPs))
	}
	if want := "tablet=10.99.0.3/32 spare=10.99.0.6/32 desk2=10.99.0.5/32"; strings.Join(ex, " ") != want {
		t.Errorf("ExtraPeers = %s, want %s", strings.Join(ex, " "), want)
	}
}

func TestClientConfigIsSplitTunnel(t *testing.T) {
	lab := testLab(t)
	p, err := AddPeer(memStore{}, lab, "tablet", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := ClientConfig(lab, p)
	back, err := Parse(c.Marshal("test"))
	if err != nil {
		t.Fatalf("Parse(client config): %v", err)
	}
	if !IsClient(back) || len(back.Peers) != 1 {
		t.Fatalf("client config has peers %+v", back.Peers)
	}
	sp := back.Peers[0]
	if joinPrefixes(sp.AllowedIPs) != "10.10.1.0/24" || sp.Endpoint != lab.Endpoint || sp.PublicKey != lab.ServerPublicKey {
		t.Errorf("server peer = %+v, want the admin CIDR only through %s", sp, lab.Endpoint)
	}
	if back.Interface.PrivateKey.Public() != p.PublicKey {
		t.Error("client private key does not match the stored public key")
	}
}

// The peers go through the real age-encrypted state folder.
func TestPeersInSecretsStore(t *testing.T) {
	dir := t.TempDir()
	store, err := secrets.OpenWithIdentity(filepath.Join(dir, "state"), filepath.Join(dir, "identity.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lab := testLab(t)
	p, err := AddPeer(store, lab, "tablet", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := fs.ReadFile(dirFS(filepath.Join(dir, "state")), PeersFile+".age")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), p.PrivateKey.Base64()) || strings.Contains(string(raw), "tablet") {
		t.Error("the peers file is not encrypted at rest")
	}
	extra, err := ExtraPeers(store)
	if err != nil || len(extra) != 1 || extra[0].PublicKey != p.PublicKey {
		t.Errorf("ExtraPeers = %+v, %v", extra, err)
	}
}

func dirFS(dir string) fs.FS { return os.DirFS(dir) }

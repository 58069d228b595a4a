package tunnel

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	k1 = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	k2 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	k3 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
)

func TestParseConfig(t *testing.T) {
	good := `# operator peer of the lab
[Interface]
PrivateKey = ` + k1 + `
Address = 10.8.0.2/32, fd00::2/128
DNS = 10.0.1.1
MTU = 1380

[peer]
publickey = ` + k2 + `   # the VPN container
PresharedKey = ` + k3 + `
Endpoint = vpn.example.net:51820
AllowedIPs = 10.0.1.0/24
AllowedIPs = 10.8.0.0/24
PersistentKeepalive = 25
`
	want := &Config{
		PrivateKey: k1,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.8.0.2/32"), netip.MustParsePrefix("fd00::2/128")},
		DNS:        []netip.Addr{netip.MustParseAddr("10.0.1.1")},
		MTU:        1380,
		Peers: []Peer{{
			PublicKey: k2, PresharedKey: k3, Endpoint: "vpn.example.net:51820",
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("10.8.0.0/24")},
			PersistentKeepalive: 25,
		}},
	}
	got, err := ParseConfig([]byte(good))
	if err != nil {
		t.Fatalf("ParseConfig(good) error: %v", err)
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("ParseConfig(good) mismatch (-want +got):\n%s", d)
	}
	again, err := ParseConfig(got.Marshal())
	if err != nil {
		t.Fatalf("ParseConfig(Marshal()) error: %v", err)
	}
	if string(again.Marshal()) != string(got.Marshal()) {
		t.Errorf("Marshal is not stable across a parse:\n%s\n---\n%s", got.Marshal(), again.Marshal())
	}
}

func TestParseConfigErrors(t *testing.T) {
	iface := "[Interface]\nPrivateKey = " + k1 + "\nAddress = 10.8.0.2/32\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "no [Interface] section"},
		{"no key", "[Interface]\nAddress = 10.8.0.2/32\n", "[Interface] has no PrivateKey"},
		{"no address", "[Interface]\nPrivateKey = " + k1 + "\n", "[Interface] has no Address"},
		{"bad key", "[Interface]\nPrivateKey = c2VjcmV0\nAddress = 10.8.0.2/32\n", "line 2: PrivateKey is not a base64 WireGuard key"},
		{"outside section", "Address = 10.8.0.2/32\n" + iface, "line 1: key outside of a section"},
		{"no equals", iface + "Address\n", "line 4: expected key = value"},
		{"unknown section", iface + "[Pear]\nPublicKey = x\n", "line 4: unknown section [pear]"},
		{"open section", iface + "[Peer\n", "line 4: section header is not closed"},
		{"two interfaces", iface + iface, "line 4: second [Interface] section"},
		{"unknown key", iface + "Colour = blue\n", `line 4: unknown [Interface] key "colour"`},
		{"postup", iface + "PostUp = iptables -A\n", "line 4: postup is a wg-quick setting for an OS interface"},
		{"bad address", iface + "Address = 10.8.0.300/32\n", `line 4: "10.8.0.300/32" is not an address or CIDR`},
		{"bad mtu", iface + "MTU = 70000\n", `line 4: MTU "70000" is not a number from 576 to 65535`},
		{"dns name", iface + "DNS = lab.internal\n", "search domains are not supported"},
		{"peer without key", iface + "[Peer]\nAllowedIPs = 10.0.0.0/8\n", "[Peer] #1 has no PublicKey"},
		{"host bits", iface + "[Peer]\nPublicKey = " + k2 + "\nAllowedIPs = 10.0.1.5/24\n", "has host bits set (did you mean 10.0.1.0/24?)"},
		{"endpoint no port", iface + "[Peer]\nPublicKey = " + k2 + "\nEndpoint = vpn.example.net\n", `Endpoint "vpn.example.net" is not host:port`},
		{"endpoint bad port", iface + "[Peer]\nPublicKey = " + k2 + "\nEndpoint = 1.2.3.4:0\n", `Endpoint port "0" is not a number`},
		{"keepalive", iface + "[Peer]\nPublicKey = " + k2 + "\nPersistentKeepalive = soon\n", `PersistentKeepalive "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseConfig(%q) succeeded, want error containing %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig(%q) = %v, want error containing %q", tt.in, err, tt.want)
			}
			for _, k := range []string{k1, k2, k3} {
				if strings.Contains(err.Error(), k) {
					t.Errorf("error quotes a key: %v", err)
				}
			}
		})
	}
}

func TestConfigStringHidesKeys(t *testing.T) {
	c := &Config{PrivateKey: k1, Peers: []Peer{{PublicKey: k2, PresharedKey: k3}}}
	for _, s := range []string{c.String()} {
		if strings.Contains(s, k1) || strings.Contains(s, k3) {
			t.Errorf("Config.String() = %q holds a secret key", s)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("[Interface]\nPrivateKey = " + k1 + "\nAddress = 10.8.0.2/32\n[Peer]\nPublicKey = " + k2 + "\nEndpoint = [fd00::1]:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n"))
	f.Add([]byte("[Interface]\n#x\nMTU=1280\nListenPort = 51820\n"))
	f.Add([]byte("[Peer\n=\n[]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		// What parses must survive a round trip unchanged.
		out := c.Marshal()
		c2, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("ParseConfig(Marshal()) error: %v\n%s", err, out)
		}
		if string(c2.Marshal()) != string(out) {
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", out, c2.Marshal())
		}
	})
}

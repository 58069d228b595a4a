package firewall

import (
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var a = netip.MustParseAddr

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = a(s)
	}
	return out
}

// testLab is a reference-like lab with every default and address filled in,
// as spec.Load returns it.
func testLab() *spec.Lab {
	return &spec.Lab{
		APIVersion: spec.APIVersion, Kind: spec.Kind, Name: "lab",
		Networks: []spec.Network{
			{Name: "wan", Role: spec.RoleWAN, Bridge: "vmbr0", CIDR: netip.MustParsePrefix("192.168.1.0/24"), Gateway: a("192.168.1.1")},
			{Name: "admin", Role: spec.RoleAdmin, Bridge: "vmbr1", CIDR: netip.MustParsePrefix("10.10.1.0/24"), Gateway: a("10.10.1.1")},
			{Name: "apps", Role: spec.RoleApps, Bridge: "vmbr2", CIDR: netip.MustParsePrefix("10.10.2.0/24"), Gateway: a("10.10.2.1")},
		},
		VPN: spec.VPN{
			Guest:      spec.Guest{Addresses: map[string]netip.Addr{"wan": a("192.168.1.10"), "admin": a("10.10.1.10")}},
			ListenPort: 51820, Tunnel: netip.MustParsePrefix("10.99.0.0/24"),
		},
		LoadBalancer: spec.LoadBalancer{
			Guest:     spec.Guest{Addresses: map[string]netip.Addr{"wan": a("192.168.1.11"), "apps": a("10.10.2.11")}},
			AdminPort: 8404,
			Frontends: []spec.Frontend{
				{Name: "http", Port: 80, Backends: spec.BackendRef{Role: "worker", Port: 30080}},
				{Name: "https", Port: 443, Backends: spec.BackendRef{Role: "worker", Port: 30443},
					Deny: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("203.0.113.128/25")}},
				{Name: "partners", Port: 8443, Backends: spec.BackendRef{Role: "worker", Port: 30443},
					Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
			},
		},
		Manager: spec.Manager{Guest: spec.Guest{Addresses: map[string]netip.Addr{"admin": a("10.10.1.20")}}},
		Cluster: spec.Cluster{
			ControlPlanes: spec.NodePool{Count: 1, Networks: []string{"admin"},
				Addresses: map[string][]netip.Addr{"admin": addrs("10.10.1.31")}},
			Workers: spec.NodePool{Count: 2, Networks: []string{"admin", "apps"},
				Addresses: map[string][]netip.Addr{"admin": addrs("10.10.1.41", "10.10.1.42"), "apps": addrs("10.10.2.41", "10.10.2.42")}},
		},
	}
}

func rulesets(t *testing.T) map[string]*Ruleset {
	t.Helper()
	rs, err := Rulesets(testLab())
	if err != nil {
		t.Fatalf("Rulesets: %v", err)
	}
	return rs
}

func TestPolicy(t *testing.T) {
	rs := rulesets(t)
	tests := []struct {
		name  string
		place string
		hook  Hook
		p     Packet
		want  Verdict
	}{
		// The host routes admin and apps to the Internet, nothing inward.
		{"node egress", PlaceHost, HookForward, Packet{IIf: "vmbr1", OIf: "vmbr0", Src: a("10.10.1.41"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Accept},
		{"manager egress dns", PlaceHost, HookForward, Packet{IIf: "vmbr1", OIf: "vmbr0", Src: a("10.10.1.20"), Dst: a("9.9.9.9"), Proto: UDP, DPort: 53}, Accept},
		{"worker apps egress", PlaceHost, HookForward, Packet{IIf: "vmbr2", OIf: "vmbr0", Src: a("10.10.2.41"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Accept},
		{"vpn peers no egress", PlaceHost, HookForward, Packet{IIf: "vmbr1", OIf: "vmbr0", Src: a("10.10.1.10"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Drop},
		{"lb no egress", PlaceHost, HookForward, Packet{IIf: "vmbr2", OIf: "vmbr0", Src: a("10.10.2.11"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Drop},
		{"spoofed source", PlaceHost, HookForward, Packet{IIf: "vmbr1", OIf: "vmbr0", Src: a("10.10.2.41"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Drop},
		{"internet to talos api", PlaceHost, HookForward, Packet{IIf: "vmbr0", OIf: "vmbr1", Src: a("203.0.113.5"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 50000}, Drop},
		{"internet to k8s api", PlaceHost, HookForward, Packet{IIf: "vmbr0", OIf: "vmbr1", Src: a("203.0.113.5"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 6443}, Drop},
		{"internet to worker ingress", PlaceHost, HookForward, Packet{IIf: "vmbr0", OIf: "vmbr2", Src: a("203.0.113.5"), Dst: a("10.10.2.41"), Proto: TCP, DPort: 30080}, Drop},
		{"admin to apps", PlaceHost, HookForward, Packet{IIf: "vmbr1", OIf: "vmbr2", Src: a("10.10.1.20"), Dst: a("10.10.2.11"), Proto: TCP, DPort: 8404}, Drop},
		{"apps to admin", PlaceHost, HookForward, Packet{IIf: "vmbr2", OIf: "vmbr1", Src: a("10.10.2.11"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 6443}, Drop},
		{"egress reply", PlaceHost, HookForward, Packet{IIf: "vmbr0", OIf: "vmbr1", Src: a("1.1.1.1"), Dst: a("10.10.1.41"), Proto: TCP, DPort: 40000, CT: CTEstablished}, Accept},

		// The load balancer: frontends on wan, admin port on apps, backends only.
		{"lb http", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 80}, Accept},
		{"lb https", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("198.18.0.9"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 443}, Accept},
		{"lb https denied source", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.200"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 443}, Drop},
		{"lb denied source other frontend", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.200"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 80}, Accept},
		{"lb allow-listed frontend", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("198.51.100.7"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 8443}, Accept},
		{"lb allow-listed frontend other source", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 8443}, Drop},
		{"lb udp 80", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.11"), Proto: UDP, DPort: 80}, Drop},
		{"lb ssh from wan", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 22}, Drop},
		{"lb admin port from wan", PlaceLB, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.11"), Proto: TCP, DPort: 8404}, Drop},
		{"lb admin port from apps", PlaceLB, HookInput, Packet{IIf: "apps", Src: a("10.10.2.41"), Dst: a("10.10.2.11"), Proto: TCP, DPort: 8404}, Accept},
		{"lb to worker http", PlaceLB, HookOutput, Packet{OIf: "apps", Src: a("10.10.2.11"), Dst: a("10.10.2.41"), Proto: TCP, DPort: 30080}, Accept},
		{"lb to worker https", PlaceLB, HookOutput, Packet{OIf: "apps", Src: a("10.10.2.11"), Dst: a("10.10.2.42"), Proto: TCP, DPort: 30443}, Accept},
		{"lb to worker ssh", PlaceLB, HookOutput, Packet{OIf: "apps", Src: a("10.10.2.11"), Dst: a("10.10.2.41"), Proto: TCP, DPort: 22}, Drop},
		{"lb to other apps host", PlaceLB, HookOutput, Packet{OIf: "apps", Src: a("10.10.2.11"), Dst: a("10.10.2.99"), Proto: TCP, DPort: 30080}, Drop},
		{"lb to internet", PlaceLB, HookOutput, Packet{OIf: "wan", Src: a("192.168.1.11"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Drop},
		{"lb replies to clients", PlaceLB, HookOutput, Packet{OIf: "wan", Src: a("192.168.1.11"), Dst: a("203.0.113.5"), Proto: TCP, DPort: 50123, CT: CTEstablished}, Accept},
		{"lb forwards nothing", PlaceLB, HookForward, Packet{IIf: "wan", OIf: "apps", Src: a("203.0.113.5"), Dst: a("10.10.2.41"), Proto: TCP, DPort: 30080}, Drop},

		// The VPN: wireguard in, tunnel to the admin ports only.
		{"vpn wireguard", PlaceVPN, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.10"), Proto: UDP, DPort: 51820}, Accept},
		{"vpn wrong port", PlaceVPN, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.10"), Proto: UDP, DPort: 51821}, Drop},
		{"vpn tcp", PlaceVPN, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.10"), Proto: TCP, DPort: 51820}, Drop},
		{"vpn ssh from wan", PlaceVPN, HookInput, Packet{IIf: "wan", Src: a("203.0.113.5"), Dst: a("192.168.1.10"), Proto: TCP, DPort: 22}, Drop},
		{"peer to k8s api", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 6443}, Accept},
		{"peer to talos api", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.41"), Proto: TCP, DPort: 50000}, Accept},
		{"peer to manager ssh", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.20"), Proto: TCP, DPort: 22}, Accept},
		{"peer to dashboards", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.41"), Proto: TCP, DPort: 443}, Accept},
		{"peer to other admin port", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 2379}, Drop},
		{"peer to apps", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.2.41"), Proto: TCP, DPort: 30080}, Drop},
		{"peer to internet", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "wan", Src: a("10.99.0.2"), Dst: a("1.1.1.1"), Proto: TCP, DPort: 443}, Drop},
		{"spoofed peer", PlaceVPN, HookForward, Packet{IIf: "wg0", OIf: "admin", Src: a("10.10.1.99"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 6443}, Drop},
		{"wan through vpn to admin", PlaceVPN, HookForward, Packet{IIf: "wan", OIf: "admin", Src: a("203.0.113.5"), Dst: a("10.10.1.31"), Proto: TCP, DPort: 6443}, Drop},
		{"admin replies to peer", PlaceVPN, HookForward, Packet{IIf: "admin", OIf: "wg0", Src: a("10.10.1.31"), Dst: a("10.99.0.2"), Proto: TCP, DPort: 40000, CT: CTEstablished}, Accept},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := rs[tt.place].Tables[0]
			if got := table.Eval(tt.hook, tt.p); got != tt.want {
				t.Errorf("%s %s Eval(%+v) = %q, want %q", tt.place, tt.hook, tt.p, got, tt.want)
			}
		})
	}
}

func TestVPNDNS(t *testing.T) {
	lab := testLab()
	lab.VPN.DNS = []netip.Addr{a("10.10.1.53"), a("9.9.9.9")}
	rs, err := Rulesets(lab)
	if err != nil {
		t.Fatal(err)
	}
	vpn := rs[PlaceVPN].Tables[0]
	tests := []struct {
		p    Packet
		want Verdict
	}{
		{Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.53"), Proto: UDP, DPort: 53}, Accept},
		{Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.53"), Proto: TCP, DPort: 53}, Accept},
		{Packet{IIf: "wg0", OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.54"), Proto: UDP, DPort: 53}, Drop},
		{Packet{IIf: "wg0", OIf: "wan", Src: a("10.99.0.2"), Dst: a("9.9.9.9"), Proto: UDP, DPort: 53}, Drop},
	}
	for _, tt := range tests {
		if got := vpn.Eval(HookForward, tt.p); got != tt.want {
			t.Errorf("vpn forward Eval(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
	nftCheck(t, rs[PlaceVPN].Text())
}

func TestMasquerade(t *testing.T) {
	rs := rulesets(t)
	tests := []struct {
		place string
		p     Packet
		want  bool
	}{
		{PlaceHost, Packet{OIf: "vmbr0", Src: a("10.10.1.41"), Dst: a("1.1.1.1")}, true},
		{PlaceHost, Packet{OIf: "vmbr0", Src: a("10.10.2.41"), Dst: a("1.1.1.1")}, true},
		{PlaceHost, Packet{OIf: "vmbr0", Src: a("192.168.1.11"), Dst: a("1.1.1.1")}, false},
		{PlaceHost, Packet{OIf: "vmbr1", Src: a("10.10.2.41"), Dst: a("10.10.1.31")}, false},
		{PlaceVPN, Packet{OIf: "admin", Src: a("10.99.0.2"), Dst: a("10.10.1.31")}, true},
		{PlaceVPN, Packet{OIf: "wan", Src: a("10.99.0.2"), Dst: a("1.1.1.1")}, false},
	}
	for _, tt := range tests {
		if got := rs[tt.place].Tables[0].Masquerades(tt.p); got != tt.want {
			t.Errorf("%s Masquerades(%+v) = %v, want %v", tt.place, tt.p, got, tt.want)
		}
	}
}

func TestRulesetsMissingPieces(t *testing.T) {
	lab := testLab()
	lab.Networks = lab.Networks[:2]
	if _, err := Rulesets(lab); err == nil || !strings.Contains(err.Error(), "no network with role apps") {
		t.Errorf("Rulesets without apps network: err = %v, want one naming the missing role", err)
	}
	lab = testLab()
	lab.LoadBalancer.Frontends[0].Backends.Role = "database"
	if _, err := Rulesets(lab); err == nil || !strings.Contains(err.Error(), `unknown backend role "database"`) {
		t.Errorf("Rulesets with unknown backend role: err = %v", err)
	}
}

// TestGolden compares each ruleset's nft text with testdata/golden and,
// when nft(8) is installed, has nft check that it would load it.
func TestGolden(t *testing.T) {
	rs := rulesets(t)
	for _, place := range []string{PlaceHost, PlaceLB, PlaceVPN} {
		t.Run(place, func(t *testing.T) {
			got := rs[place].Text()
			path := filepath.Join("testdata", "golden", place+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run go test -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("%s ruleset differs from %s (run go test -update and review the diff):\n%s", place, path, got)
			}
			nftCheck(t, got)
		})
	}
}

// nftCheck runs "nft -c -f" on the text: a dry run of the real parser and
// of the kernel's checks, which changes nothing.
func nftCheck(t *testing.T, text string) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft(8) not on PATH: install nftables to check the rulesets with nft -c")
	}
	if os.Geteuid() != 0 {
		t.Skip("nft -c needs root (CAP_NET_ADMIN): run the tests as root to check the rulesets with nft")
	}
	f := filepath.Join(t.TempDir(), "ruleset.nft")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nft, "-c", "-f", f).CombinedOutput(); err != nil {
		t.Errorf("nft -c -f refused the ruleset: %v\n%s", err, out)
	}
}

package local

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/spec"
)

func referenceLab(t *testing.T, name string) *spec.Lab {
	t.Helper()
	yaml := strings.Replace(string(spec.Reference(spec.ProviderLocal)), "\nname: lab\n", "\nname: "+name+"\n", 1)
	lab, _, err := spec.Parse("lab.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parsing the reference lab: %v", err)
	}
	return lab
}

func TestTopologyOfReference(t *testing.T) {
	for _, name := range []string{"lab", "a-twelve-chr"} {
		t.Run(name, func(t *testing.T) {
			topo, err := TopologyOf(referenceLab(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := topo.HostWAN, netip.MustParsePrefix("192.168.1.254/24"); got != want {
				t.Errorf("HostWAN = %v, want %v", got, want)
			}
			if got, want := topo.InternetAddr, netip.MustParsePrefix("192.168.1.1/24"); got != want {
				t.Errorf("InternetAddr = %v, want %v", got, want)
			}
			seen := map[string]bool{}
			for _, g := range topo.Guests {
				if !Owns(name, g.NS) {
					t.Errorf("Owns(%q, %q) = false for a guest namespace", name, g.NS)
				}
				for _, l := range g.Links {
					if len(l.Host) > 15 || len(l.Inside) > 15 {
						t.Errorf("link %s/%s: names longer than IFNAMSIZ", l.Host, l.Inside)
					}
					if seen[l.Host] {
						t.Errorf("host-side link name %s used twice", l.Host)
					}
					seen[l.Host] = true
					if l.Addr.Addr() == topo.HostWAN.Addr() {
						t.Errorf("%s has the host's wan address", g.NS)
					}
				}
				wantGW := map[spec.MachineRole]string{
					spec.MachineVPN: "192.168.1.1", spec.MachineLB: "192.168.1.1", spec.MachineManager: "10.10.1.1",
					spec.MachineControlPlane: "10.10.1.1", spec.MachineWorker: "10.10.1.1",
				}[g.Machine.Role]
				if g.Gateway.String() != wantGW {
					t.Errorf("%s: gateway %v, want %s", g.NS, g.Gateway, wantGW)
				}
			}
			if len(topo.Namespaces()) != 9 {
				t.Errorf("%d namespaces, want 9 (host, internet, vpn-client and 6 guests)", len(topo.Namespaces()))
			}
		})
	}
}

func TestOwns(t *testing.T) {
	for _, tc := range []struct {
		lab, name string
		want      bool
	}{
		{"lab", "lab-host", true},
		{"lab", "lab-worker-12", true},
		{"lab", "lab-vpn-client", true},
		{"lab", "lab-vpn", true},
		{"lab", "lab-worker-x", false},
		{"lab", "lab2-host", false},
		{"lab", "lab-vpn-host", false}, // lab "lab-vpn"'s host
		{"lab-vpn", "lab-vpn-host", true},
		{"lab", "other", false},
	} {
		if got := Owns(tc.lab, tc.name); got != tc.want {
			t.Errorf("Owns(%q, %q) = %v, want %v", tc.lab, tc.name, got, tc.want)
		}
	}
}

func TestHostIfName(t *testing.T) {
	for _, tc := range []struct{ lab, suffix, want string }{
		{"lab", "w1n0", "lab-w1n0"},
		{"a-twelve-chr", "w12n1", "a-twelve--w12n1"},
		{"a-twelve-chr", "inet", "a-twelve-c-inet"},
	} {
		if got := hostIfName(tc.lab, tc.suffix); got != tc.want || len(got) > 15 {
			t.Errorf("hostIfName(%q, %q) = %q, want %q", tc.lab, tc.suffix, got, tc.want)
		}
	}
}

func TestRulesetDigestSeesAddedRule(t *testing.T) {
	lab := referenceLab(t, "lab")
	rs, err := rulesetsOf(lab)
	if err != nil {
		t.Fatal(err)
	}
	host := rs["host"]
	before := rulesetDigest(host)
	if again := rulesetDigest(host); again != before {
		t.Fatalf("digest is not deterministic: %s then %s", before, again)
	}
	fwd := host.Tables[0].Chain("forward")
	fwd.Rules = append(fwd.Rules, fwd.Rules[0])
	if after := rulesetDigest(host); after == before {
		t.Errorf("digest did not change when a rule was added")
	}
}

func rulesetsOf(lab *spec.Lab) (map[string]*firewall.Ruleset, error) { return firewall.Rulesets(lab) }

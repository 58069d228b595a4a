package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReference(t *testing.T) {
	for _, p := range []Provider{ProviderLocal, ProviderProxmox} {
		t.Run(string(p), func(t *testing.T) {
			// Through the file system, as homelab init then validate do.
			path := filepath.Join(t.TempDir(), "lab.yaml")
			if err := os.WriteFile(path, Reference(p), 0o644); err != nil {
				t.Fatal(err)
			}
			lab, warns, err := Load(path)
			if err != nil {
				t.Fatalf("Load(reference %s): %v", p, err)
			}
			if len(warns) > 0 {
				t.Errorf("reference %s has warnings: %v", p, warns)
			}
			if lab.Host.Provider != p {
				t.Errorf("provider = %s, want %s", lab.Host.Provider, p)
			}
			if lab.Host.Memory != 16*GiB || lab.Host.Disk != 500*GiB {
				t.Errorf("host = %s / %s, want 16GiB / 500GiB", lab.Host.Memory, lab.Host.Disk)
			}
			b := lab.Budget()
			if !b.Fits() || b.Used.Memory+lab.Host.Reserve.Memory > 16*GiB {
				t.Errorf("reference does not fit in 16GiB with the reserve: %+v", b.Used)
			}
			if len(lab.GitOps.Apps) != 2 || lab.GitOps.Apps[0].Name != "nextcloud" || lab.GitOps.Apps[1].Name != "openproject" {
				t.Errorf("apps = %+v, want nextcloud and openproject", lab.GitOps.Apps)
			}
			if p == ProviderProxmox {
				px := lab.Host.Proxmox
				if px == nil || px.TokenEnv == "" || !strings.HasPrefix(px.Endpoint, "https://") {
					t.Errorf("proxmox section = %+v", px)
				}
			} else if lab.Host.Proxmox != nil {
				t.Errorf("local reference has a proxmox section")
			}
			if a := lab.VPN.Addresses["wan"].String(); a != "192.168.1.240" {
				t.Errorf("vpn wan = %s, want 192.168.1.240", a)
			}
		})
	}
}

// TestReferenceDocumentsDefaults keeps the reference's comments honest
// about the defaults in code.
func TestReferenceDocumentsDefaults(t *testing.T) {
	ref := string(Reference(ProviderLocal))
	for _, s := range []string{"VPN .2, LB .3, manager .5", "control planes .10", "workers .20",
		"VPN 100, LB 101, manager 110", "control\n# planes 200+, workers 210+", DefaultFluxVersion, DefaultK9sVersion,
		"10.99.0.0/24", "51820", "8404", "20000", "256", "100"} {
		if !strings.Contains(ref, s) {
			t.Errorf("reference lab.yaml does not mention %q", s)
		}
	}
	// Every non-comment key of the reference is known to the decoder:
	// Parse would have failed otherwise, but also check the comments
	// teach the secret rule.
	if !strings.Contains(string(Reference(ProviderProxmox)), "NEVER goes in this file") {
		t.Errorf("proxmox reference does not explain where the token secret goes")
	}
}

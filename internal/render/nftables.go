package render

import (
	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
)

// renderNftables writes the host's, the load balancer's and the VPN's
// rulesets as nft scripts (nft -f loads each atomically).
func renderNftables(lab *spec.Lab, _ *secrets.Bundle) ([]Artifact, error) {
	rs, err := firewall.Rulesets(lab)
	if err != nil {
		return nil, err
	}
	what := map[string]string{
		firewall.PlaceHost: "nftables ruleset of the host (forwarding between bridges, NAT)",
		firewall.PlaceLB:   "nftables ruleset of the load balancer container",
		firewall.PlaceVPN:  "nftables ruleset of the VPN container",
	}
	var arts []Artifact
	for _, place := range []string{firewall.PlaceHost, firewall.PlaceLB, firewall.PlaceVPN} {
		text := header(lab, what[place]) + "# Load with: nft -f " + place + ".nft\n" + rs[place].Text()
		arts = append(arts, Artifact{Path: "nftables/" + place + ".nft", Data: []byte(text)})
	}
	return arts, nil
}

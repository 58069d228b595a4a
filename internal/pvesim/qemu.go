package pvesim

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// cloudInitKeys are the config keys PVE renders into the cloud-init drive.
func isCloudInitKey(k string) bool {
	switch k {
	case "ciuser", "cipassword", "citype", "ciupgrade", "cicustom", "sshkeys", "nameserver", "searchdomain":
		return true
	}
	return strings.HasPrefix(k, "ipconfig")
}

func hasCloudInitDrive(g *Guest) bool {
	for k, v := range g.Config {
		if diskKeyRE.MatchString(k) && strings.Contains(v, "-cloudinit") {
			return true
		}
	}
	return false
}

// agentReady answers like the guest agent endpoints: the VM must run, have
// the agent enabled and have booted for the configured delay.
func (s *Sim) agentReady(r *req) (*Guest, error) {
	g, err := s.guest(r, "qemu")
	if err != nil {
		return nil, err
	}
	if g.Status != "running" {
		return nil, errf(500, "VM %d is not running", g.VMID)
	}
	if !agentEnabled(g) {
		return nil, errf(500, "No QEMU guest agent configured")
	}
	if s.now().Sub(g.StartedAt) < s.scaled(s.bootDelay) {
		return nil, errf(500, "QEMU guest agent is not running")
	}
	return g, nil
}

func init() {
	handle("POST /nodes/{node}/qemu/{vmid}/agent/ping", func(s *Sim, r *req) (any, error) {
		if _, err := s.agentReady(r); err != nil {
			return nil, err
		}
		return map[string]any{"result": map[string]any{}}, nil
	})
	handle("GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", func(s *Sim, r *req) (any, error) {
		g, err := s.agentReady(r)
		if err != nil {
			return nil, err
		}
		ifaces := []map[string]any{{
			"name": "lo", "hardware-address": "00:00:00:00:00:00",
			"ip-addresses": []map[string]any{{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}},
		}}
		for _, k := range slices.Sorted(maps.Keys(g.Config)) {
			idx, ok := strings.CutPrefix(k, "net")
			if !ok || !netKeyRE.MatchString(k) {
				continue
			}
			var mac string
			parts, _ := parsePropertyString(g.Config[k])
			for _, kv := range parts {
				if kv[0] != "bridge" && kv[0] != "firewall" && kv[0] != "" && macRE.MatchString(kv[1]) {
					mac = strings.ToLower(kv[1])
				}
			}
			addrs := []map[string]any{}
			ipc, _ := parsePropertyString(g.Config["ipconfig"+idx])
			for _, kv := range ipc {
				if kv[0] == "ip" || kv[0] == "ip6" {
					if p, err := netip.ParsePrefix(kv[1]); err == nil {
						t := "ipv4"
						if p.Addr().Is6() {
							t = "ipv6"
						}
						addrs = append(addrs, map[string]any{"ip-address": p.Addr().String(), "ip-address-type": t, "prefix": p.Bits()})
					}
				}
			}
			ifaces = append(ifaces, map[string]any{"name": "eth" + idx, "hardware-address": mac, "ip-addresses": addrs})
		}
		return map[string]any{"result": ifaces}, nil
	})
	handle("GET /nodes/{node}/qemu/{vmid}/pending", func(s *Sim, r *req) (any, error) {
		g, err := s.guest(r, "qemu")
		if err != nil {
			return nil, err
		}
		out := []map[string]any{}
		conf := s.configAnswer(g)
		for _, k := range slices.Sorted(maps.Keys(conf)) {
			out = append(out, map[string]any{"key": k, "value": conf[k]})
		}
		return out, nil
	})
	handle("GET /nodes/{node}/qemu/{vmid}/cloudinit", func(s *Sim, r *req) (any, error) {
		g, err := s.guest(r, "qemu")
		if err != nil {
			return nil, err
		}
		out := []map[string]any{}
		for _, k := range slices.Sorted(maps.Keys(g.Config)) {
			if isCloudInitKey(k) {
				out = append(out, map[string]any{"key": k, "value": g.Config[k]})
			}
		}
		return out, nil
	})
	handle("PUT /nodes/{node}/qemu/{vmid}/cloudinit", func(s *Sim, r *req) (any, error) {
		g, err := s.guest(r, "qemu")
		if err != nil {
			return nil, err
		}
		if err := checkLock(g, r); err != nil {
			return nil, err
		}
		if !hasCloudInitDrive(g) {
			return nil, errf(500, "no cloudinit drive found for VM %d", g.VMID)
		}
		return nil, nil
	})
}

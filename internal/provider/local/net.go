package local

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/homelab-dev/homelab/internal/provider/local/ns"
)

// nsSysctls are set in every namespace of the lab: no IPv6 (the lab is
// IPv4; this also skips duplicate address detection on every link), and
// forwarding where the namespace routes.
func nsSysctls(forward bool) [][3]string {
	fwd := "0"
	if forward {
		fwd = "1"
	}
	return [][3]string{
		{"net/ipv6/conf/all/disable_ipv6", "1", "opt"},
		{"net/ipv6/conf/default/disable_ipv6", "1", "opt"},
		{"net/ipv4/ip_forward", fwd, ""},
		// A bridge must not send its frames through the host's inet
		// hooks (br_netfilter): the host filters routed traffic only.
		{"net/bridge/bridge-nf-call-iptables", "0", "opt"},
		{"net/bridge/bridge-nf-call-arptables", "0", "opt"},
	}
}

// ensureNS creates a namespace with loopback up and its sysctls.
func ensureNS(name string, forward bool) error {
	if err := ns.Create(name); err != nil {
		return err
	}
	for _, s := range nsSysctls(forward) {
		if err := ns.Sysctl(name, s[0], s[1], s[2] == "opt"); err != nil {
			return err
		}
	}
	return withHandle(name, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("finding lo in %s: %w", name, err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("bringing lo up in %s: %w", name, err)
		}
		return nil
	})
}

// observeNS reads what ensureNS sets.
func observeNS(name string) map[string]string {
	attrs := map[string]string{}
	if v, err := ns.ReadSysctl(name, "net/ipv4/ip_forward"); err == nil {
		attrs["forward"] = v
	}
	_ = withHandle(name, func(h *netlink.Handle) error {
		if lo, err := h.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp != 0 {
			attrs["lo"] = "up"
		}
		return nil
	})
	return attrs
}

// withHandle runs f with a netlink handle inside the named namespace.
func withHandle(name string, f func(h *netlink.Handle) error) error {
	nsh, err := ns.Open(name)
	if err != nil {
		return err
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("opening netlink in %s: %w", name, err)
	}
	defer h.Close()
	return f(h)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// route is a route inside a namespace; an invalid Dst is the default route.
type route struct {
	Dst netip.Prefix
	Via netip.Addr
}

func (r route) String() string {
	dst := "default"
	if r.Dst.IsValid() {
		dst = r.Dst.String()
	}
	return dst + " via " + r.Via.String()
}

func routesAttr(rs []route) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

// bridgeSpec is one bridge of the host namespace.
type bridgeSpec struct {
	NS     string
	Name   string
	Addr   netip.Prefix
	Routes []route
	// MAC is fixed: a bridge without one takes its ports' lowest MAC and
	// changes it when ports come and go, which strands the neighbours'
	// ARP entries for the gateway.
	MAC net.HardwareAddr
}

func (b bridgeSpec) attrs() map[string]string {
	a := map[string]string{"state": "up"}
	if b.MAC != nil {
		a["mac"] = b.MAC.String()
	}
	if b.Addr.IsValid() {
		a["addr"] = b.Addr.String()
	}
	if len(b.Routes) > 0 {
		a["routes"] = routesAttr(b.Routes)
	}
	return a
}

func ensureBridge(b bridgeSpec) error {
	return withHandle(b.NS, func(h *netlink.Handle) error {
		l, err := h.LinkByName(b.Name)
		if isNotFound(err) {
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name, HardwareAddr: b.MAC}}); err != nil {
				return fmt.Errorf("adding bridge %s: %w", b.Name, err)
			}
			l, err = h.LinkByName(b.Name)
		}
		if err != nil {
			return fmt.Errorf("finding bridge %s: %w", b.Name, err)
		}
		if l.Type() != "bridge" {
			return fmt.Errorf("%s in %s is a %s, not a bridge", b.Name, b.NS, l.Type())
		}
		if b.MAC != nil && l.Attrs().HardwareAddr.String() != b.MAC.String() {
			if err := h.LinkSetHardwareAddr(l, b.MAC); err != nil {
				return fmt.Errorf("setting the MAC of bridge %s: %w", b.Name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing bridge %s up: %w", b.Name, err)
		}
		if err := setAddr(h, l, b.Addr); err != nil {
			return err
		}
		return addRoutes(h, l, b.Routes)
	})
}

// setAddr makes p the link's only IPv4 address (none when p is invalid).
func setAddr(h *netlink.Handle, l netlink.Link, p netip.Prefix) error {
	have, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range have {
		if p.IsValid() && a.IPNet.String() == p.String() {
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing %s from %s: %w", a.IPNet, l.Attrs().Name, err)
		}
	}
	if !p.IsValid() {
		return nil
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := h.AddrReplace(l, a); err != nil {
		return fmt.Errorf("adding %s to %s: %w", p, l.Attrs().Name, err)
	}
	return nil
}

func addRoutes(h *netlink.Handle, l netlink.Link, rs []route) error {
	for _, r := range rs {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: r.Via.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
		if r.Dst.IsValid() {
			nr.Dst = &net.IPNet{IP: r.Dst.Masked().Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}
		}
		if err := h.RouteReplace(nr); err != nil {
			return fmt.Errorf("adding route %s: %w", r, err)
		}
	}
	return nil
}

// observeLinkState reads a link's state, address and gateway routes.
func observeLinkState(h *netlink.Handle, l netlink.Link) map[string]string {
	a := map[string]string{}
	if l.Attrs().Flags&net.FlagUp != 0 {
		a["state"] = "up"
	} else {
		a["state"] = "down"
	}
	if addrs, err := h.AddrList(l, unix.AF_INET); err == nil && len(addrs) > 0 {
		ones, _ := addrs[0].Mask.Size()
		if ip, ok := netip.AddrFromSlice(addrs[0].IP.To4()); ok {
			a["addr"] = netip.PrefixFrom(ip, ones).String()
		}
	}
	if rs, err := h.RouteList(l, unix.AF_INET); err == nil {
		var out []route
		for _, r := range rs {
			if r.Gw == nil {
				continue
			}
			var rt route
			rt.Via, _ = netip.AddrFromSlice(r.Gw.To4())
			if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && len(r.Dst.Mask) > 0 && r.Dst.Mask[0] == 0) {
				ones, _ := r.Dst.Mask.Size()
				ip, _ := netip.AddrFromSlice(r.Dst.IP.To4())
				rt.Dst = netip.PrefixFrom(ip, ones)
			}
			out = append(out, rt)
		}
		if len(out) > 0 {
			a["routes"] = routesAttr(out)
		}
	}
	return a
}

func observeBridge(nsName, name string) (map[string]string, bool) {
	var attrs map[string]string
	found := false
	_ = withHandle(nsName, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil || l.Type() != "bridge" {
			return nil
		}
		found = true
		attrs = observeLinkState(h, l)
		attrs["mac"] = l.Attrs().HardwareAddr.String()
		return nil
	})
	return attrs, found
}

// linkSpec is a veth pair: End in EndNS (a bridge port when Master is
// set, with EndAddr when valid), Peer in PeerNS with the guest's MAC,
// address and routes.
type linkSpec struct {
	EndNS, End, Master string
	EndAddr            netip.Prefix
	PeerNS, Peer       string
	MAC                net.HardwareAddr
	// EndMAC fixes the end's MAC when it has an address (an L3 leg).
	EndMAC net.HardwareAddr
	Addr   netip.Prefix
	Routes []route
}

func (s linkSpec) attrs() map[string]string {
	a := map[string]string{"state": "up", "end": s.EndNS + "/" + s.End}
	if s.Master != "" {
		a["master"] = s.Master
	}
	if s.EndAddr.IsValid() {
		a["endAddr"] = s.EndAddr.String()
	}
	if s.MAC != nil {
		a["mac"] = s.MAC.String()
	}
	if s.EndMAC != nil {
		a["endMAC"] = s.EndMAC.String()
	}
	if s.Addr.IsValid() {
		a["addr"] = s.Addr.String()
	}
	if len(s.Routes) > 0 {
		a["routes"] = routesAttr(s.Routes)
	}
	return a
}

func ensureLink(s linkSpec) error {
	peerNS, err := ns.Open(s.PeerNS)
	if err != nil {
		return err
	}
	defer peerNS.Close()
	return withHandle(s.EndNS, func(h *netlink.Handle) error {
		end, err := h.LinkByName(s.End)
		if err == nil && !hasLink(s.PeerNS, s.Peer) {
			// The pair's other end is not in the guest's namespace (the
			// namespace was deleted and made again): start over.
			if err := h.LinkDel(end); err != nil {
				return fmt.Errorf("deleting the stale %s in %s: %w", s.End, s.EndNS, err)
			}
			end, err = nil, netlink.LinkNotFoundError{}
		}
		if isNotFound(err) {
			// A peer of that name left in the guest by an interrupted run
			// would block the create; it has no other end, remove it.
			_ = withHandle(s.PeerNS, func(ph *netlink.Handle) error {
				if l, err := ph.LinkByName(s.Peer); err == nil {
					return ph.LinkDel(l)
				}
				return nil
			})
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.End, HardwareAddr: s.EndMAC}, PeerName: s.Peer,
				PeerNamespace: netlink.NsFd(int(peerNS)), PeerHardwareAddr: s.MAC}
			if err := h.LinkAdd(v); err != nil {
				return fmt.Errorf("adding veth %s/%s: %w", s.End, s.Peer, err)
			}
			end, err = h.LinkByName(s.End)
		}
		if err != nil {
			return fmt.Errorf("finding %s in %s: %w", s.End, s.EndNS, err)
		}
		if s.Master != "" {
			br, err := h.LinkByName(s.Master)
			if err != nil {
				return fmt.Errorf("finding bridge %s: %w", s.Master, err)
			}
			if end.Attrs().MasterIndex != br.Attrs().Index {
				if err := h.LinkSetMaster(end, br); err != nil {
					return fmt.Errorf("attaching %s to %s: %w", s.End, s.Master, err)
				}
			}
		}
		if s.EndMAC != nil && end.Attrs().HardwareAddr.String() != s.EndMAC.String() {
			if err := h.LinkSetHardwareAddr(end, s.EndMAC); err != nil {
				return fmt.Errorf("setting the MAC of %s: %w", s.End, err)
			}
		}
		if s.EndAddr.IsValid() {
			if err := setAddr(h, end, s.EndAddr); err != nil {
				return err
			}
		}
		if err := h.LinkSetUp(end); err != nil {
			return fmt.Errorf("bringing %s up: %w", s.End, err)
		}
		return withHandle(s.PeerNS, func(ph *netlink.Handle) error {
			p, err := ph.LinkByName(s.Peer)
			if err != nil {
				return fmt.Errorf("finding %s in %s: %w", s.Peer, s.PeerNS, err)
			}
			if s.MAC != nil && p.Attrs().HardwareAddr.String() != s.MAC.String() {
				if err := ph.LinkSetHardwareAddr(p, s.MAC); err != nil {
					return fmt.Errorf("setting the MAC of %s in %s: %w", s.Peer, s.PeerNS, err)
				}
			}
			if err := setAddr(ph, p, s.Addr); err != nil {
				return err
			}
			if err := ph.LinkSetUp(p); err != nil {
				return fmt.Errorf("bringing %s up in %s: %w", s.Peer, s.PeerNS, err)
			}
			return addRoutes(ph, p, s.Routes)
		})
	})
}

// hasLink reports whether the named namespace has a link of that name.
func hasLink(nsName, name string) bool {
	found := false
	_ = withHandle(nsName, func(h *netlink.Handle) error {
		_, err := h.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

// observeLink reads a veth pair; found is false when the end in EndNS is
// missing.
func observeLink(s linkSpec) (map[string]string, bool) {
	attrs := map[string]string{}
	found := false
	_ = withHandle(s.EndNS, func(h *netlink.Handle) error {
		end, err := h.LinkByName(s.End)
		if err != nil || end.Type() != "veth" {
			return nil
		}
		found = true
		attrs["end"] = s.EndNS + "/" + s.End
		if mi := end.Attrs().MasterIndex; mi != 0 {
			if br, err := h.LinkByIndex(mi); err == nil {
				attrs["master"] = br.Attrs().Name
			}
		}
		es := observeLinkState(h, end)
		if v, ok := es["addr"]; ok {
			attrs["endAddr"] = v
		}
		if s.EndMAC != nil {
			attrs["endMAC"] = end.Attrs().HardwareAddr.String()
		}
		state := es["state"]
		_ = withHandle(s.PeerNS, func(ph *netlink.Handle) error {
			p, err := ph.LinkByName(s.Peer)
			if err != nil {
				attrs["state"] = "no peer"
				return nil
			}
			attrs["mac"] = p.Attrs().HardwareAddr.String()
			ps := observeLinkState(ph, p)
			for _, k := range []string{"addr", "routes"} {
				if v, ok := ps[k]; ok {
					attrs[k] = v
				}
			}
			if ps["state"] != "up" {
				state = ps["state"]
			}
			attrs["state"] = state
			return nil
		})
		return nil
	})
	return attrs, found
}

// deleteLink removes a veth pair by its end; a missing namespace or link
// is already deleted.
func deleteLink(endNS, end string) error {
	if !ns.Exists(endNS) {
		return nil
	}
	return withHandle(endNS, func(h *netlink.Handle) error {
		l, err := h.LinkByName(end)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("finding %s in %s: %w", end, endNS, err)
		}
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("deleting %s in %s: %w", end, endNS, err)
		}
		return nil
	})
}

// deleteBridge removes a bridge of the host namespace.
func deleteBridge(nsName, name string) error { return deleteLink(nsName, name) }

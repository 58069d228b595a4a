// Package diagram draws the lab's architecture as a hand-made SVG: the
// host, its three networks as lanes, every guest with its addresses, the
// ports exposed to the Internet and the VPN path to the admin network. It
// has no dependency beyond the standard library and its output depends only
// on the spec.
package diagram

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/homelab-dev/homelab/internal/firewall"
	"github.com/homelab-dev/homelab/internal/spec"
)

// Layout constants, in SVG user units (pixels at 100%).
const (
	margin    = 24
	sideW     = 210 // the outside world, left of the host
	boxW      = 196
	gapX      = 26
	lineH     = 16
	hostPad   = 28
	laneLabel = 18
	fontStack = "'Segoe UI', 'Helvetica Neue', Helvetica, Arial, sans-serif"
	monoStack = "'DejaVu Sans Mono', Menlo, Consolas, monospace"
)

// Colors per network role, and for the VPN path.
var roleColor = map[spec.Role]string{
	spec.RoleWAN:   "#e8590c",
	spec.RoleAdmin: "#1971c2",
	spec.RoleApps:  "#2f9e44",
}

var roleTint = map[spec.Role]string{
	spec.RoleWAN:   "#fff4e6",
	spec.RoleAdmin: "#e7f5ff",
	spec.RoleApps:  "#ebfbee",
}

const (
	vpnColor  = "#7048e8"
	denyColor = "#e03131"
	inkColor  = "#212529"
	mutedInk  = "#495057"
)

var roleTitle = map[spec.MachineRole]string{
	spec.MachineVPN:          "WireGuard VPN",
	spec.MachineLB:           "load balancer",
	spec.MachineManager:      "manager · admin tools, GitOps",
	spec.MachineControlPlane: "Talos control plane",
	spec.MachineWorker:       "Talos worker",
}

// svg accumulates elements.
type svg struct{ b bytes.Buffer }

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (s *svg) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

// text writes one line of text; anchor is start, middle or end.
func (s *svg) text(x, y int, size int, weight, color, anchor, content string) {
	s.f(`<text x="%d" y="%d" font-size="%d" font-weight="%s" fill="%s" text-anchor="%s">%s</text>`+"\n",
		x, y, size, weight, color, anchor, esc(content))
}

// tag writes text on a white label, so that lines it crosses stay
// readable. Its width is estimated from the font size (no font metrics
// here): generous for digits and lowercase, which is what labels hold.
func (s *svg) tag(x, y int, size int, weight, color, anchor, content string) {
	per := 0.56
	if weight == "700" {
		per = 0.62
	}
	w := int(float64(size)*per*float64(utf8.RuneCountInString(content))) + 10
	x0 := x - 5
	switch anchor {
	case "end":
		x0 = x - w + 5
	case "middle":
		x0 = x - w/2
	}
	s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="4" fill="#ffffff"/>`+"\n", x0, y-size, w, size+5)
	s.text(x, y, size, weight, color, anchor, content)
}

func (s *svg) mono(x, y int, size int, color, anchor, content string) {
	s.f(`<text x="%d" y="%d" font-size="%d" font-family="%s" fill="%s" text-anchor="%s">%s</text>`+"\n",
		x, y, size, monoStack, color, anchor, esc(content))
}

// box is a placed guest.
type box struct {
	m       spec.Machine
	x, y    int
	w, h    int
	lines   []string
	details string
}

func (b *box) cx() int { return b.x + b.w/2 }

// anchorX spreads a box's connectors: the i-th of n along its width.
func (b *box) anchorX(i, n int) int {
	if n <= 1 {
		return b.cx()
	}
	return b.x + b.w*(i+1)/(n+1)
}

func newBox(m spec.Machine) *box {
	b := &box{m: m, w: boxW}
	kind := "LXC"
	if m.Kind == spec.KindVM {
		kind = "VM"
	}
	b.details = fmt.Sprintf("%s · %d vCPU · %s", kind, m.Cores, m.Memory)
	for _, n := range m.NICs {
		if n.Address.IsValid() {
			b.lines = append(b.lines, fmt.Sprintf("%-5s %s", n.Network, n.Address))
		}
	}
	b.h = 52 + lineH*len(b.lines) + 6
	return b
}

// SVG draws the lab. The lab should have gone through spec.Load so that
// every guest has its addresses; missing pieces are left out of the
// drawing rather than guessed.
func SVG(lab *spec.Lab) []byte {
	machines := lab.Machines()
	var vpn, lb *box
	var row2 []*box
	for _, m := range machines {
		switch m.Role {
		case spec.MachineVPN:
			vpn = newBox(m)
		case spec.MachineLB:
			lb = newBox(m)
		default:
			row2 = append(row2, newBox(m))
		}
	}
	wan, _ := lab.NetworkByRole(spec.RoleWAN)
	admin, _ := lab.NetworkByRole(spec.RoleAdmin)
	apps, _ := lab.NetworkByRole(spec.RoleApps)

	// Horizontal placement: row 2 (manager and nodes) from the left, the
	// VPN above its left end, the LB above, right of row 2, so that its
	// link to apps passes beside the nodes.
	hostX := margin + sideW + 36
	x := hostX + hostPad
	for _, b := range row2 {
		b.x = x
		x += boxW + gapX
	}
	row2End := x
	if vpn != nil {
		vpn.x = hostX + hostPad
	}
	if lb != nil {
		lb.x = max(row2End, hostX+hostPad+2*(boxW+gapX))
		x = max(x, lb.x+boxW+gapX)
	}
	hostW := max(x-gapX+hostPad-hostX, 760)
	width := hostX + hostW + margin

	// Vertical placement.
	titleY := margin + 22
	hostY := titleY + 40
	wanY := hostY + 74
	row1Y := wanY + 52
	row1H := 0
	for _, b := range []*box{vpn, lb} {
		if b != nil {
			b.y = row1Y
			row1H = max(row1H, b.h)
		}
	}
	adminY := row1Y + row1H + 58
	row2Y := adminY + 52
	row2H := 0
	for _, b := range row2 {
		b.y = row2Y
		row2H = max(row2H, b.h)
	}
	appsY := row2Y + row2H + 58
	hostH := appsY + 44 - hostY
	legendY := hostY + hostH + 34
	height := legendY + 96

	var s svg
	s.f(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s">`+"\n",
		width, height, width, height, fontStack)
	s.f("<title>%s</title>\n", esc("homelab "+lab.Name+": architecture"))
	s.f(`<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>
<marker id="arrow-vpn" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>
</defs>
`, mutedInk, vpnColor)
	s.f(`<rect width="100%%" height="100%%" fill="#fcfcfa"/>` + "\n")

	// Title.
	s.text(margin, titleY, 22, "700", inkColor, "start", "homelab · "+lab.Name)
	sub := fmt.Sprintf("provider %s · host %s RAM · %s disk · %d cores · Talos %s · Kubernetes %s",
		lab.Host.Provider, lab.Host.Memory, lab.Host.Disk, lab.Host.Cores, lab.Cluster.TalosVersion, lab.Cluster.KubernetesVersion)
	s.text(margin, titleY+20, 13, "400", mutedInk, "start", sub)

	// The host.
	hostLabel := "Proxmox VE host"
	if lab.Host.Provider == spec.ProviderLocal {
		hostLabel = "host (local provider: network namespaces on this machine)"
	}
	s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="18" fill="#dee2e6"/>`+"\n", hostX+4, hostY+5, hostW, hostH)
	s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="18" fill="#ffffff" stroke="%s" stroke-width="2.5"/>`+"\n",
		hostX, hostY, hostW, hostH, inkColor)
	s.text(hostX+18, hostY+26, 15, "700", inkColor, "start", hostLabel)
	s.text(hostX+hostW-18, hostY+26, 12, "400", mutedInk, "end", "firewall: nftables/host.nft · default deny between zones")

	// Lanes.
	laneX0, laneX1 := hostX+12, hostX+hostW-12
	var labels []func() // lane labels are drawn last, over the connectors
	lane := func(n *spec.Network, y int, note string) {
		if n == nil {
			return
		}
		c := roleColor[n.Role]
		s.f(`<rect x="%d" y="%d" width="%d" height="12" rx="6" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
			laneX0, y-6, laneX1-laneX0, roleTint[n.Role], c)
		s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", laneX0+6, y, laneX1-6, y, c)
		label := fmt.Sprintf("%s · %s · %s", n.Name, n.Bridge, n.CIDR)
		if n.VLAN != 0 {
			label += fmt.Sprintf(" · VLAN %d", n.VLAN)
		}
		labels = append(labels, func() {
			s.tag(laneX0+10, y-laneLabel+5, 13, "700", c, "start", label)
			s.tag(laneX1-8, y-laneLabel+5, 11, "400", c, "end", note)
		})
	}
	gwNote := func(n *spec.Network, what string) string {
		if n == nil || !n.Gateway.IsValid() {
			return what
		}
		return fmt.Sprintf("%s · gateway %s", what, n.Gateway)
	}
	lane(wan, wanY, gwNote(wan, "Internet side: only the LB frontends and the VPN port"))
	lane(admin, adminY, gwNote(admin, "reachable only through the VPN · host NAT to wan"))
	lane(apps, appsY, gwNote(apps, "application traffic: LB → workers' ingress · host NAT to wan"))

	laneY := map[spec.Role]int{spec.RoleWAN: wanY, spec.RoleAdmin: adminY, spec.RoleApps: appsY}

	// Connectors from each box to its lanes, drawn before the boxes.
	all := append([]*box{}, row2...)
	for _, b := range []*box{vpn, lb} {
		if b != nil {
			all = append(all, b)
		}
	}
	for _, b := range all {
		for i, n := range b.m.NICs {
			ly, ok := laneY[n.Role]
			if !ok || !n.Address.IsValid() {
				continue
			}
			ax := b.anchorX(i, len(b.m.NICs))
			y0 := b.y
			if ly > b.y {
				y0 = b.y + b.h
			}
			c := roleColor[n.Role]
			if b.m.Role == spec.MachineLB && n.Role == spec.RoleApps && ly > adminY && b.y < adminY {
				// The LB has no leg on admin: hop over the admin lane.
				s.f(`<path d="M%d,%d L%d,%d A9,9 0 0 1 %d,%d L%d,%d" fill="none" stroke="%s" stroke-width="2.5"/>`+"\n",
					ax, y0, ax, adminY-9, ax, adminY+9, ax, ly, c)
			} else {
				s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"/>`+"\n", ax, y0, ax, ly, c)
			}
			s.f(`<circle cx="%d" cy="%d" r="4.5" fill="#fff" stroke="%s" stroke-width="2.5"/>`+"\n", ax, ly, c)
		}
	}

	// Exposed ports on wan.
	badge := func(x, y int, label, color string) {
		w := 7*len(label) + 14
		labels = append(labels, func() {
			s.f(`<rect x="%d" y="%d" width="%d" height="20" rx="10" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
				x-w/2, y-14, w, "#fff", color)
			s.mono(x, y+1, 11, color, "middle", label)
		})
	}
	if lb != nil {
		var ports []string
		for _, fe := range lab.LoadBalancer.Frontends {
			ports = append(ports, fmt.Sprintf("%d/%s", fe.Port, protoOf(fe.Protocol)))
		}
		if i, ok := nicIndex(lb.m, spec.RoleWAN); ok {
			badge(lb.anchorX(i, len(lb.m.NICs)), (wanY+lb.y)/2+4, strings.Join(ports, " "), roleColor[spec.RoleWAN])
		}
	}
	if vpn != nil {
		if i, ok := nicIndex(vpn.m, spec.RoleWAN); ok {
			badge(vpn.anchorX(i, len(vpn.m.NICs)), (wanY+vpn.y)/2+4, fmt.Sprintf("%d/udp", lab.VPN.ListenPort), vpnColor)
		}
	}

	// Boxes, then the lane labels over everything they cross.
	for _, b := range all {
		drawBox(&s, b, lab)
	}
	for _, l := range labels {
		l()
	}

	// The outside world: the Internet on the wan lane, VPN peers below.
	cloudX, cloudY := margin+sideW/2, wanY
	s.f(`<path d="M%d,%d c-22,0 -30,-26 -8,-32 c2,-22 34,-26 44,-10 c12,-18 46,-12 44,10 c24,2 24,32 0,32 z" fill="#f1f3f5" stroke="%s" stroke-width="2"/>`+"\n",
		cloudX-40, cloudY+16, mutedInk)
	s.text(cloudX+2, cloudY+5, 14, "700", inkColor, "middle", "Internet")
	s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5" marker-end="url(#arrow)"/>`+"\n",
		cloudX+62, wanY, laneX0-2, wanY, mutedInk)
	if wan != nil {
		s.text(cloudX+8, wanY+38, 11, "400", mutedInk, "middle", "bridged to the physical NIC")
	}
	s.text(cloudX+8, wanY+54, 11, "400", denyColor, "middle", "✕ never to admin or apps")

	// VPN peers and the tunnel path.
	if vpn != nil {
		peerY := adminY - 6
		tunnel := lab.VPN.Tunnel
		peerH := 44 + lineH*len(lab.VPN.Peers)
		px := margin
		s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="10" fill="#f3f0ff" stroke="%s" stroke-width="2" stroke-dasharray="6 4"/>`+"\n",
			px, peerY, sideW, peerH, vpnColor)
		s.text(px+12, peerY+20, 13, "700", vpnColor, "start", "VPN peers (admins)")
		s.text(px+12, peerY+36, 11, "400", mutedInk, "start", "split tunnel: "+netString(admin))
		for i, p := range lab.VPN.Peers {
			addr := ""
			if p.Address.IsValid() {
				addr = p.Address.String()
			}
			s.mono(px+12, peerY+54+i*lineH, 11, inkColor, "start", fmt.Sprintf("%-8s %s", p.Name, addr))
		}
		// Peer -> VPN's wan port (over the Internet), then tunnel -> admin.
		s.f(`<path d="M%d,%d C%d,%d %d,%d %d,%d" fill="none" stroke="%s" stroke-width="2.5" stroke-dasharray="7 5" marker-end="url(#arrow-vpn)"/>`+"\n",
			px+sideW, peerY+14, px+sideW+60, peerY-10, vpn.x-40, vpn.y+vpn.h/2, vpn.x-2, vpn.y+vpn.h/2, vpnColor)
		s.text(px+12, peerY-10, 11, "700", vpnColor, "start", "WireGuard "+tunnel.String())
		// Tunnel into admin, with the allowed ports.
		var ports []string
		for _, p := range firewall.AdminPorts {
			ports = append(ports, fmt.Sprint(p.Number))
		}
		tx := vpn.x + vpn.w + 14
		s.text(tx, vpn.y+vpn.h-30, 11, "700", vpnColor, "start", "tunnel → admin only")
		s.mono(tx, vpn.y+vpn.h-16, 11, vpnColor, "start", "tcp "+strings.Join(ports, ","))
		s.text(tx, vpn.y+vpn.h-2, 11, "400", denyColor, "start", "✕ no apps, no Internet")
	}

	// Legend.
	lx := margin
	s.text(lx, legendY, 13, "700", inkColor, "start", "Security policy (default deny between zones)")
	rows := []struct{ color, text string }{
		{roleColor[spec.RoleWAN], "Internet → LB frontends and the VPN port only; never admin or apps"},
		{vpnColor, "VPN peers → admin: SSH, dashboards, Kubernetes API 6443, Talos API 50000; nothing else"},
		{roleColor[spec.RoleApps], "LB → workers' ingress ports on apps only; no admin, no egress"},
		{roleColor[spec.RoleAdmin], "nodes and manager → admin, and the Internet through the host's NAT"},
	}
	for i, r := range rows {
		y := legendY + 20 + i*18
		s.f(`<rect x="%d" y="%d" width="22" height="6" rx="3" fill="%s"/>`+"\n", lx, y-8, r.color)
		s.text(lx+32, y, 12, "400", inkColor, "start", r.text)
	}
	if lab.Host.Provider == spec.ProviderLocal {
		s.text(width-margin, legendY+20+3*18, 11, "400", mutedInk, "end",
			"local provider: Talos nodes are stand-ins that serve a node's ports")
	}
	s.f("</svg>\n")
	return s.b.Bytes()
}

func drawBox(s *svg, b *box, lab *spec.Lab) {
	accent := inkColor
	switch b.m.Role {
	case spec.MachineVPN:
		accent = vpnColor
	case spec.MachineLB:
		accent = roleColor[spec.RoleWAN]
	case spec.MachineControlPlane, spec.MachineWorker:
		accent = "#0c8599"
	}
	s.f(`<g id="%s">`+"\n", esc(b.m.Name))
	s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="10" fill="#e9ecef"/>`+"\n", b.x+3, b.y+4, b.w, b.h)
	s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="10" fill="#ffffff" stroke="%s" stroke-width="2"/>`+"\n",
		b.x, b.y, b.w, b.h, accent)
	s.f(`<rect x="%d" y="%d" width="6" height="%d" rx="3" fill="%s"/>`+"\n", b.x+1, b.y+8, b.h-16, accent)
	s.text(b.x+16, b.y+20, 14, "700", inkColor, "start", b.m.Name)
	title := roleTitle[b.m.Role]
	if lab.Host.Provider == spec.ProviderLocal && (b.m.Role == spec.MachineControlPlane || b.m.Role == spec.MachineWorker) {
		title += " (stand-in)"
	}
	s.text(b.x+16, b.y+35, 11, "400", accent, "start", title)
	s.text(b.x+16, b.y+49, 11, "400", mutedInk, "start", b.details)
	for i, l := range b.lines {
		s.mono(b.x+16, b.y+66+i*lineH, 12, inkColor, "start", l)
	}
	s.f("</g>\n")
}

func nicIndex(m spec.Machine, r spec.Role) (int, bool) {
	for i, n := range m.NICs {
		if n.Role == r {
			return i, true
		}
	}
	return 0, false
}

func protoOf(p string) string {
	if p == "" {
		return "tcp"
	}
	return p
}

func netString(n *spec.Network) string {
	if n == nil {
		return "admin only"
	}
	return n.CIDR.String() + " only"
}

package vpn

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MaxConfigSize bounds a config file (real ones are a few KiB).
const MaxConfigSize = 1 << 20

// KeyLen is the length of a WireGuard key.
const KeyLen = 32

// Key is a WireGuard public or preshared key; String is its base64 form.
type Key [KeyLen]byte

func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether the key is unset.
func (k Key) IsZero() bool { return k == Key{} }

// PrivateKey is a WireGuard private key. It never prints itself: String
// hides it; Base64 is for writing config files only.
type PrivateKey [KeyLen]byte

func (PrivateKey) String() string { return "(private key)" }

// Base64 is the key as wg(8) prints it.
func (k PrivateKey) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether the key is unset.
func (k PrivateKey) IsZero() bool { return k == PrivateKey{} }

// ParseKey decodes a base64 WireGuard key. Its error never quotes s.
func ParseKey(s string) (Key, error) {
	var k Key
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != KeyLen {
		return k, errors.New("not a WireGuard key (32 bytes in base64, as wg genkey prints it)")
	}
	copy(k[:], raw)
	return k, nil
}

// Config is a wg-quick style configuration: the server's (peers with
// AllowedIPs only) or a client's (one peer with an Endpoint).
type Config struct {
	Interface Interface
	Peers     []Peer
}

// String describes the config without its keys: printing a Config with
// %v would otherwise show the peers' preshared keys, which are secret.
func (c *Config) String() string {
	return fmt.Sprintf("wireguard interface %v with %d peer(s)", c.Interface.Addresses, len(c.Peers))
}

// Interface is the [Interface] section.
type Interface struct {
	PrivateKey PrivateKey
	Addresses  []netip.Prefix
	ListenPort int // 0: a random port (clients)
	DNS        []netip.Addr
	MTU        int // 0: the default (1420)
}

// Peer is a [Peer] section. Name comes from a "# peer NAME" comment right
// above the section (render writes one), or from the peer store.
type Peer struct {
	Name                string
	PublicKey           Key
	PresharedKey        Key
	AllowedIPs          []netip.Prefix
	Endpoint            string // host:port, empty on the server's side
	PersistentKeepalive int    // seconds, 0: off
}

// ParseError is a problem at one line of a config.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Parse reads a wg-quick config strictly: unknown keys, keys outside a
// section, malformed values and wg-quick hooks (PostUp and the like, which
// homelab never runs) are errors, all reported at once. Errors never
// quote key material.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("wireguard config is larger than %d KiB", MaxConfigSize>>10)
	}
	var (
		c         Config
		errs      []error
		section   string
		ifLine    int
		peerLines []int
		lastName  string
	)
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &ParseError{Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxConfigSize)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			comment := strings.TrimSpace(text[i+1:])
			text = text[:i]
			if strings.TrimSpace(text) == "" {
				if name, ok := strings.CutPrefix(comment, "peer "); ok {
					lastName = strings.TrimSpace(name)
				}
				continue
			}
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "[") {
			if !strings.HasSuffix(text, "]") {
				fail(line, "malformed section header")
				section = ""
				continue
			}
			switch name := strings.ToLower(strings.TrimSpace(text[1 : len(text)-1])); name {
			case "interface":
				if ifLine != 0 {
					fail(line, "a second [Interface] section (the first is at line %d)", ifLine)
				}
				ifLine, section = line, name
			case "peer":
				c.Peers = append(c.Peers, Peer{Name: lastName})
				peerLines = append(peerLines, line)
				section = name
			default:
				fail(line, "unknown section (want [Interface] or [Peer])")
				section = ""
			}
			lastName = ""
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			fail(line, "want Key = Value")
			continue
		}
		key, value = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(value)
		var err error
		switch section {
		case "interface":
			err = c.Interface.set(key, value)
		case "peer":
			err = c.Peers[len(c.Peers)-1].set(key, value)
		default:
			err = fmt.Errorf("%s outside a section", show(key))
		}
		if err != nil {
			fail(line, "%s", err)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("reading wireguard config: %w", err))
	}
	if ifLine == 0 {
		errs = append(errs, errors.New("no [Interface] section"))
	} else if c.Interface.PrivateKey.IsZero() {
		fail(ifLine, "[Interface] has no PrivateKey")
	}
	seen := map[Key]int{}
	for i, p := range c.Peers {
		switch {
		case p.PublicKey.IsZero():
			fail(peerLines[i], "[Peer] has no PublicKey")
		case seen[p.PublicKey] != 0:
			fail(peerLines[i], "[Peer] has the same PublicKey as the peer at line %d", seen[p.PublicKey])
		default:
			seen[p.PublicKey] = peerLines[i]
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &c, nil
}

// hooks are wg-quick keys that run commands or touch routing policy;
// homelab vpn run does neither, so it refuses them rather than ignore them.
var hooks = map[string]bool{
	"preup": true, "postup": true, "predown": true, "postdown": true,
	"saveconfig": true, "table": true, "fwmark": true,
}

func (f *Interface) set(key, value string) error {
	switch key {
	case "privatekey":
		k, err := ParseKey(value)
		if err != nil {
			return keyErr("PrivateKey", err)
		}
		f.PrivateKey = PrivateKey(k)
	case "address":
		ps, err := parsePrefixes(value, true)
		if err != nil {
			return keyErr("Address", err)
		}
		f.Addresses = append(f.Addresses, ps...)
	case "listenport":
		p, err := strconv.Atoi(value)
		if err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("ListenPort: %s is not a port", show(value))
		}
		f.ListenPort = p
	case "dns":
		for _, s := range splitList(value) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("DNS: %s is not an IP address (search domains are not supported)", show(s))
			}
			f.DNS = append(f.DNS, a)
		}
	case "mtu":
		m, err := strconv.Atoi(value)
		if err != nil || m < 576 || m > 65535 {
			return fmt.Errorf("MTU: %s is not between 576 and 65535", show(value))
		}
		f.MTU = m
	default:
		if hooks[key] {
			return fmt.Errorf("%s is a wg-quick hook that homelab vpn run does not support", key) // key is a known name
		}
		return fmt.Errorf("unknown [Interface] key %s", show(key))
	}
	return nil
}

func (p *Peer) set(key, value string) error {
	switch key {
	case "publickey":
		k, err := ParseKey(value)
		if err != nil {
			return keyErr("PublicKey", err)
		}
		p.PublicKey = k
	case "presharedkey":
		k, err := ParseKey(value)
		if err != nil {
			return keyErr("PresharedKey", err)
		}
		p.PresharedKey = k
	case "allowedips":
		ps, err := parsePrefixes(value, false)
		if err != nil {
			return keyErr("AllowedIPs", err)
		}
		p.AllowedIPs = append(p.AllowedIPs, ps...)
	case "endpoint":
		host, port, err := splitHostPort(value)
		if err != nil {
			return keyErr("Endpoint", err)
		}
		p.Endpoint = joinHostPort(host, port)
	case "persistentkeepalive":
		if value == "off" {
			p.PersistentKeepalive = 0
			return nil
		}
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("PersistentKeepalive: %s is not off or 0-65535 seconds", show(value))
		}
		p.PersistentKeepalive = n
	default:
		return fmt.Errorf("unknown [Peer] key %s", show(key))
	}
	return nil
}

// keyErr names the config key a value error is about.
func keyErr(key string, err error) error { return fmt.Errorf("%s: %w", key, err) }

// show quotes a value for an error message, unless it holds a run of 16
// or more base64 characters: it may be a key pasted in the wrong place,
// and keys never appear in messages.
func show(v string) string {
	run := 0
	for _, r := range v {
		if r < 0x80 && (r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=') {
			run++
			if run >= 16 {
				return fmt.Sprintf("(a %d-character value, not shown: it may be a key)", len(v))
			}
			continue
		}
		run = 0
	}
	return strconv.Quote(v)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parsePrefixes reads a comma list of CIDRs; a bare address is a host
// route. Interface addresses keep their host bits (10.99.0.1/24);
// AllowedIPs are masked as wg(8) does.
func parsePrefixes(s string, keepHost bool) ([]netip.Prefix, error) {
	items := splitList(s)
	if len(items) == 0 {
		return nil, errors.New("empty list")
	}
	var out []netip.Prefix
	for _, item := range items {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			a, aerr := netip.ParseAddr(item)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%s is not an address or CIDR", show(item))
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !keepHost {
			p = p.Masked()
		}
		out = append(out, p)
	}
	return out, nil
}

// splitHostPort splits host:port ([v6]:port), checking the port.
func splitHostPort(s string) (string, uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("%s is not host:port", show(s))
	}
	host, ps := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", 0, fmt.Errorf("%s is not host:port", show(s))
		}
		host = host[1 : len(host)-1]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", 0, fmt.Errorf("%s is not host:port", show(s))
		}
	} else if strings.Contains(host, ":") {
		return "", 0, fmt.Errorf("%s: put an IPv6 address in brackets", show(s))
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 || host == "" || strings.ContainsAny(host, " \t[]") {
		return "", 0, fmt.Errorf("%s is not host:port", show(s))
	}
	return host, uint16(port), nil
}

func joinHostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}

// Marshal writes c in wg-quick format (the private key included: the
// result is secret), with header comment lines first.
func (c *Config) Marshal(header ...string) []byte {
	var b bytes.Buffer
	for _, h := range header {
		fmt.Fprintf(&b, "# %s\n", h)
	}
	f := &c.Interface
	b.WriteString("[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", f.PrivateKey.Base64())
	if len(f.Addresses) > 0 {
		fmt.Fprintf(&b, "Address = %s\n", joinPrefixes(f.Addresses))
	}
	if f.ListenPort != 0 {
		fmt.Fprintf(&b, "ListenPort = %d\n", f.ListenPort)
	}
	if len(f.DNS) > 0 {
		dns := make([]string, len(f.DNS))
		for i, d := range f.DNS {
			dns[i] = d.String()
		}
		fmt.Fprintf(&b, "DNS = %s\n", strings.Join(dns, ", "))
	}
	if f.MTU != 0 {
		fmt.Fprintf(&b, "MTU = %d\n", f.MTU)
	}
	for _, p := range c.Peers {
		b.WriteString("\n")
		if p.Name != "" {
			fmt.Fprintf(&b, "# peer %s\n", p.Name)
		}
		fmt.Fprintf(&b, "[Peer]\nPublicKey = %s\n", p.PublicKey)
		if !p.PresharedKey.IsZero() {
			fmt.Fprintf(&b, "PresharedKey = %s\n", p.PresharedKey)
		}
		if p.Endpoint != "" {
			fmt.Fprintf(&b, "Endpoint = %s\n", p.Endpoint)
		}
		if len(p.AllowedIPs) > 0 {
			fmt.Fprintf(&b, "AllowedIPs = %s\n", joinPrefixes(p.AllowedIPs))
		}
		if p.PersistentKeepalive != 0 {
			fmt.Fprintf(&b, "PersistentKeepalive = %d\n", p.PersistentKeepalive)
		}
	}
	return b.Bytes()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// UAPI is the configuration in wireguard's cross-platform userspace API
// (keys in hex), replacing whatever the device had. Every peer Endpoint
// must be an IP:port already (see Run, which resolves names).
func (c *Config) UAPI() (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(c.Interface.PrivateKey[:]))
	fmt.Fprintf(&b, "listen_port=%d\n", c.Interface.ListenPort)
	b.WriteString("replace_peers=true\n")
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if !p.PresharedKey.IsZero() {
			fmt.Fprintf(&b, "preshared_key=%s\n", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != "" {
			ap, err := netip.ParseAddrPort(p.Endpoint)
			if err != nil {
				return "", fmt.Errorf("peer %s: endpoint %q is not IP:port", p.label(), p.Endpoint)
			}
			fmt.Fprintf(&b, "endpoint=%s\n", ap)
		}
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String(), nil
}

// label names a peer in messages: its name, else its public key.
func (p *Peer) label() string {
	if p.Name != "" {
		return p.Name
	}
	return p.PublicKey.String()
}

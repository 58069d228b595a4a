package tunnel

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

// maxConfigSize bounds what ParseConfig accepts.
const maxConfigSize = 1 << 20

// Config is a WireGuard interface and its peers, as in a wg-quick file.
// PrivateKey and PresharedKey are secrets: Config never prints them.
type Config struct {
	// PrivateKey is the interface's key, base64 as wg(8) prints it.
	PrivateKey string
	// Addresses are the interface's addresses inside the VPN.
	Addresses []netip.Prefix
	// DNS servers reached through the tunnel (optional).
	DNS []netip.Addr
	// MTU of the tunnel; zero means DefaultMTU.
	MTU int
	// ListenPort is the UDP port to listen on; zero picks a free one.
	ListenPort int
	Peers      []Peer
}

// Peer is a [Peer] section.
type Peer struct {
	PublicKey    string
	PresharedKey string
	// Endpoint is host:port of the peer's UDP socket (optional for a
	// server that waits for its clients).
	Endpoint            string
	AllowedIPs          []netip.Prefix
	PersistentKeepalive int
}

// DefaultMTU is wg-quick's default for an IPv4 path (1500 - 80).
const DefaultMTU = 1420

// String describes the config without its keys.
func (c *Config) String() string {
	return fmt.Sprintf("wireguard interface %v with %d peer(s)", c.Addresses, len(c.Peers))
}

// ParseError is a problem in a config file, at a line.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseConfig reads a wg-quick style config: an [Interface] section with
// PrivateKey, Address, DNS, MTU and ListenPort, then [Peer] sections with
// PublicKey, PresharedKey, Endpoint, AllowedIPs and PersistentKeepalive.
// Keys are case-insensitive, '#' starts a comment, lists are comma
// separated and keys may repeat to extend a list. wg-quick's scripting keys
// (PostUp, Table, ...) are refused: there is no OS interface here. Errors
// name the line and never quote a key's value.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("parsing wireguard config: larger than %d KiB", maxConfigSize>>10)
	}
	c := &Config{}
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &ParseError{Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	section := ""
	seenInterface := false
	var peer *Peer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxConfigSize)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "[") {
			if !strings.HasSuffix(text, "]") {
				fail(line, "section header is not closed with ]")
				section = "?"
				continue
			}
			switch name := strings.ToLower(strings.TrimSpace(text[1 : len(text)-1])); name {
			case "interface":
				if seenInterface {
					fail(line, "second [Interface] section")
				}
				seenInterface = true
				section = name
			case "peer":
				c.Peers = append(c.Peers, Peer{})
				peer = &c.Peers[len(c.Peers)-1]
				section = name
			default:
				fail(line, "unknown section [%s]", truncate(name))
				section = "?"
			}
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			fail(line, "expected key = value")
			continue
		}
		key = strings.ToLower(strings.TrimSpace(key))
		value = strings.TrimSpace(value)
		var err error
		switch section {
		case "":
			err = errors.New("key outside of a section")
		case "?":
			continue // already reported
		case "interface":
			err = c.set(key, value)
		case "peer":
			err = peer.set(key, value)
		}
		if err != nil {
			fail(line, "%v", err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parsing wireguard config: %w", err)
	}
	if !seenInterface {
		errs = append(errs, errors.New("no [Interface] section"))
	} else {
		if c.PrivateKey == "" {
			errs = append(errs, errors.New("[Interface] has no PrivateKey"))
		}
		if len(c.Addresses) == 0 {
			errs = append(errs, errors.New("[Interface] has no Address"))
		}
	}
	for i, p := range c.Peers {
		if p.PublicKey == "" {
			errs = append(errs, fmt.Errorf("[Peer] #%d has no PublicKey", i+1))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("parsing wireguard config: %w", errors.Join(errs...))
	}
	return c, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

func (c *Config) set(key, value string) error {
	var err error
	switch key {
	case "privatekey":
		if !validKey(value) {
			return errors.New("PrivateKey is not a base64 WireGuard key")
		}
		c.PrivateKey = value
	case "address":
		var ps []netip.Prefix
		ps, err = parsePrefixes(value, true)
		c.Addresses = append(c.Addresses, ps...)
	case "dns":
		for f := range strings.SplitSeq(value, ",") {
			f = strings.TrimSpace(f)
			a, perr := netip.ParseAddr(f)
			if perr != nil {
				// wg-quick allows search domains here; we resolve nothing by name.
				return fmt.Errorf("DNS: %q is not an IP address (search domains are not supported)", truncate(f))
			}
			c.DNS = append(c.DNS, a)
		}
	case "mtu":
		c.MTU, err = parseInt("MTU", value, 576, 65535)
	case "listenport":
		c.ListenPort, err = parseInt("ListenPort", value, 0, 65535)
	case "fwmark", "table", "preup", "postup", "predown", "postdown", "saveconfig":
		return fmt.Errorf("%s is a wg-quick setting for an OS interface; the in-process tunnel has none", key)
	default:
		return fmt.Errorf("unknown [Interface] key %q", truncate(key))
	}
	return err
}

func (p *Peer) set(key, value string) error {
	var err error
	switch key {
	case "publickey":
		if !validKey(value) {
			return errors.New("PublicKey is not a base64 WireGuard key")
		}
		p.PublicKey = value
	case "presharedkey":
		if !validKey(value) {
			return errors.New("PresharedKey is not a base64 WireGuard key")
		}
		p.PresharedKey = value
	case "endpoint":
		host, port, ok := splitHostPort(value)
		if !ok || host == "" {
			return fmt.Errorf("peer Endpoint %q is not host:port", truncate(value))
		}
		if _, err := parseInt("Endpoint port", port, 1, 65535); err != nil {
			return err
		}
		p.Endpoint = value
	case "allowedips":
		var ps []netip.Prefix
		ps, err = parsePrefixes(value, false)
		p.AllowedIPs = append(p.AllowedIPs, ps...)
	case "persistentkeepalive":
		if strings.EqualFold(value, "off") {
			p.PersistentKeepalive = 0
			return nil
		}
		p.PersistentKeepalive, err = parseInt("PersistentKeepalive", value, 0, 65535)
	default:
		return fmt.Errorf("unknown [Peer] key %q", truncate(key))
	}
	return err
}

// splitHostPort splits host:port and [v6]:port.
func splitHostPort(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", false
		}
		return s[1:end], s[end+2:], true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.Contains(s[:i], ":") {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func parseInt(name, value string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q is not a number from %d to %d", name, truncate(value), lo, hi)
	}
	return n, nil
}

// parsePrefixes reads a comma separated list of CIDRs; a bare address is
// a host prefix. With keepHost the address bits are kept (Address =
// 10.8.0.2/24 means the address 10.8.0.2); otherwise they must be zero.
func parsePrefixes(value string, keepHost bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(value, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(f)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR", truncate(f))
		}
		if !keepHost && p.Masked() != p {
			return nil, fmt.Errorf("AllowedIPs %s has host bits set (did you mean %s?)", p, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

func validKey(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// hexKey converts a checked base64 key to the hex form of the UAPI.
func hexKey(s string) string {
	b, _ := base64.StdEncoding.DecodeString(s)
	return hex.EncodeToString(b)
}

// Marshal writes the config back in wg-quick form. The output holds the
// private key: write it 0600.
func (c *Config) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString("[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", c.PrivateKey)
	if len(c.Addresses) > 0 {
		fmt.Fprintf(&b, "Address = %s\n", joinPrefixes(c.Addresses))
	}
	if len(c.DNS) > 0 {
		s := make([]string, len(c.DNS))
		for i, a := range c.DNS {
			s[i] = a.String()
		}
		fmt.Fprintf(&b, "DNS = %s\n", strings.Join(s, ", "))
	}
	if c.MTU != 0 {
		fmt.Fprintf(&b, "MTU = %d\n", c.MTU)
	}
	if c.ListenPort != 0 {
		fmt.Fprintf(&b, "ListenPort = %d\n", c.ListenPort)
	}
	for _, p := range c.Peers {
		b.WriteString("\n[Peer]\n")
		fmt.Fprintf(&b, "PublicKey = %s\n", p.PublicKey)
		if p.PresharedKey != "" {
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

func hexToBase64(h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

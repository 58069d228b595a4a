package pvesim

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Messages as PVE::JSONSchema words them.
const (
	msgUnknownParam = "property is not defined in schema and the schema does not allow additional properties"
	msgMissingParam = "property is missing and it is not optional"
)

// validate checks every parameter of a request against the method's schema
// and returns PVE's per-parameter error messages (empty when valid).
func (m *method) validate(params url.Values) map[string]string {
	errs := map[string]string{}
	for name, vals := range params {
		p := m.lookup(name)
		if p == nil {
			errs[name] = msgUnknownParam
			continue
		}
		if p.Type != "array" && len(vals) > 1 {
			errs[name] = "property is given more than once"
			continue
		}
		for _, v := range vals {
			if msg := p.check(v); msg != "" {
				errs[name] = msg
				break
			}
		}
	}
	for name := range params {
		p := m.lookup(name)
		if p == nil || len(p.Requires) == 0 || p.Requires[0] != '"' {
			continue
		}
		var other string
		json.Unmarshal(p.Requires, &other)
		if _, ok := params[other]; !ok && errs[other] == "" {
			errs[other] = fmt.Sprintf("missing property - '%s' requires this property", name)
		}
	}
	for name, p := range m.Parameters.Properties {
		if bool(p.Optional) || strings.HasSuffix(name, "[n]") {
			continue
		}
		if _, ok := params[name]; !ok {
			errs[name] = msgMissingParam
		}
	}
	return errs
}

var (
	intRE   = regexp.MustCompile(`^[+-]?\d+$`)
	numRE   = regexp.MustCompile(`^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$`)
	boolRE  = regexp.MustCompile(`(?i)^(?:1|0|true|false|yes|no|on|off)$`)
	trueRE  = regexp.MustCompile(`(?i)^(?:1|true|yes|on)$`)
	splitRE = regexp.MustCompile(`[,;\s]+`)
)

// check validates one value and returns PVE's message for it, or "".
func (p *prop) check(v string) string {
	switch p.Type {
	case "integer":
		if !intRE.MatchString(v) {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", v)
		}
		if msg := p.checkRange(v); msg != "" {
			return msg
		}
	case "number":
		if !numRE.MatchString(v) {
			return fmt.Sprintf("type check ('number') failed - got '%s'", v)
		}
		if msg := p.checkRange(v); msg != "" {
			return msg
		}
	case "boolean":
		if !boolRE.MatchString(v) {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", v)
		}
	case "array":
		if p.Items != nil {
			return p.Items.check(v)
		}
		return ""
	}
	if len(p.Enum) > 0 && !p.inEnum(v) {
		names := make([]string, len(p.Enum))
		for i, e := range p.Enum {
			names[i] = fmt.Sprint(e)
		}
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(names, ", "))
	}
	if p.MaxLength != nil && len(v) > int(*p.MaxLength) {
		return fmt.Sprintf("value may only be %d characters long", int(*p.MaxLength))
	}
	if p.MinLength != nil && len(v) < int(*p.MinLength) {
		return fmt.Sprintf("value must be at least %d characters long", int(*p.MinLength))
	}
	if p.re != nil && !p.re.MatchString(v) {
		return "value does not match the regex pattern"
	}
	if p.fmtObj != nil {
		if msg := checkPropertyString(p.fmtObj, v); msg != "" {
			return "invalid format - " + msg
		}
	} else if p.fmtName != "" {
		if msg := checkFormat(p.fmtName, v); msg != "" {
			return "invalid format - " + msg
		}
	}
	return ""
}

func (p *prop) inEnum(v string) bool {
	for _, e := range p.Enum {
		if fmt.Sprint(e) == v {
			return true
		}
	}
	return false
}

func (p *prop) checkRange(v string) string {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return fmt.Sprintf("type check ('%s') failed - got '%s'", p.Type, v)
	}
	if p.Minimum != nil && f < float64(*p.Minimum) {
		return fmt.Sprintf("value must have a minimum value of %s", fmtNum(float64(*p.Minimum)))
	}
	if p.Maximum != nil && f > float64(*p.Maximum) {
		return fmt.Sprintf("value must have a maximum value of %s", fmtNum(float64(*p.Maximum)))
	}
	return ""
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// parsePropertyString splits "a,k=v,k2=v2" into keys; a bare value is
// returned under the empty key.
func parsePropertyString(s string) ([][2]string, error) {
	var out [][2]string
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			out = append(out, [2]string{"", part})
			continue
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// checkPropertyString validates a property string against an object format:
// known keys, each value valid, required keys present.
func checkPropertyString(format map[string]*prop, s string) string {
	parts, _ := parsePropertyString(s)
	var defKey string
	for k, p := range format {
		if bool(p.DefaultKey) {
			defKey = k
		}
	}
	seen := map[string]bool{}
	var problems []string
	for _, kv := range parts {
		k, v := kv[0], kv[1]
		if k == "" {
			if defKey == "" {
				problems = append(problems, fmt.Sprintf("value without key '%s', but schema does not define a default key", v))
				continue
			}
			k = defKey
		}
		p, ok := format[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: property is not defined in schema and the schema does not allow additional properties", k))
			continue
		}
		if p.Alias != "" {
			if p.KeyAlias != "" {
				seen[p.KeyAlias] = true
			}
			k = p.Alias
			if p = format[k]; p == nil {
				continue
			}
		}
		if seen[k] {
			problems = append(problems, fmt.Sprintf("%s: duplicate key in comma-separated list property", k))
			continue
		}
		seen[k] = true
		if msg := p.check(v); msg != "" {
			problems = append(problems, k+": "+msg)
		}
	}
	for k, p := range format {
		if bool(p.Optional) || p.Alias != "" || seen[k] {
			continue
		}
		problems = append(problems, k+": property is missing and it is not optional")
	}
	if len(problems) == 0 {
		return ""
	}
	sort.Strings(problems)
	return "format error: " + strings.Join(problems, "; ")
}

var (
	vmidRE     = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)
	nodeRE     = regexp.MustCompile(`^[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)
	storageRE  = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	configIDRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)
	tagRE      = regexp.MustCompile(`(?i)^[a-z0-9_][a-z0-9_\-+.]*$`)
	ifaceRE    = regexp.MustCompile(`(?i)^[a-z][a-z0-9_]{1,20}(?:[:.]\d+)?$`)
	bridgeRE   = regexp.MustCompile(`^[-_.\w]+$`)
	volumeRE   = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)
	emailRE    = regexp.MustCompile(`^[\w+\-~]+(?:\.[\w+\-~]+)*@[a-zA-Z0-9\-]+(?:\.[a-zA-Z0-9\-]+)*$`)
	macRE      = regexp.MustCompile(`(?i)^[a-f0-9]{2}(?::[a-f0-9]{2}){5}$`)
	dnsRE      = regexp.MustCompile(`^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)$`)
	portRE     = regexp.MustCompile(`^(?:\d+(?::\d+)?|[a-zA-Z][a-zA-Z0-9\-]*)$`)
	aliasRE    = regexp.MustCompile(`^(?:(?:dc|guest)/)?[A-Za-z][A-Za-z0-9\-_]+$`)
	// protocols are the names of /etc/protocols that rules use.
	protocols = map[string]bool{"tcp": true, "udp": true, "icmp": true, "icmpv6": true, "ipv6-icmp": true,
		"igmp": true, "gre": true, "esp": true, "ah": true, "sctp": true, "udplite": true, "ipip": true,
		"ipencap": true, "ipv6": true, "vrrp": true, "ospf": true, "pim": true, "l2tp": true, "egp": true,
		"rsvp": true, "ipv6-route": true, "ipv6-frag": true, "ipv6-nonxt": true, "ipv6-opts": true, "dccp": true}
	contents = map[string]bool{"images": true, "rootdir": true, "vztmpl": true, "iso": true, "backup": true, "snippets": true, "import": true, "none": true}
)

// checkFormat validates a value against a named PVE format. Formats not
// listed here are accepted.
func checkFormat(name, v string) string {
	if base, ok := strings.CutSuffix(name, "-list"); ok && name != "pve-configid-list" && name != "pve-tag-list" {
		for _, item := range splitRE.Split(v, -1) {
			if item == "" {
				continue
			}
			if msg := checkFormat(base, item); msg != "" {
				return msg
			}
		}
		return ""
	}
	switch name {
	case "pve-vmid":
		if !vmidRE.MatchString(v) {
			return "value does not look like a valid VM ID"
		}
	case "pve-node":
		if !nodeRE.MatchString(v) {
			return "value does not look like a valid node name"
		}
	case "pve-storage-id":
		if !storageRE.MatchString(v) {
			return fmt.Sprintf("storage ID '%s' contains illegal characters", v)
		}
	case "pve-configid":
		if !configIDRE.MatchString(v) {
			return fmt.Sprintf("invalid configuration ID '%s'", v)
		}
	case "pve-configid-list":
		for _, item := range splitRE.Split(v, -1) {
			if item != "" && !configIDRE.MatchString(item) {
				return fmt.Sprintf("invalid configuration ID '%s'", item)
			}
		}
	case "pve-tag-list":
		for _, item := range regexp.MustCompile(`[;, ]+`).Split(v, -1) {
			if item != "" && !tagRE.MatchString(item) {
				return fmt.Sprintf("invalid tag '%s'", item)
			}
		}
	case "pve-iface":
		if !ifaceRE.MatchString(v) {
			return fmt.Sprintf("invalid network interface name '%s'", v)
		}
	case "pve-bridge-id":
		if !bridgeRE.MatchString(v) {
			return fmt.Sprintf("invalid bridge ID '%s'", v)
		}
	case "pve-volume-id":
		if !volumeRE.MatchString(v) {
			return fmt.Sprintf("unable to parse volume ID '%s'", v)
		}
	case "pve-volume-id-or-qm-path", "pve-volume-id-or-absolute-path":
		if !volumeRE.MatchString(v) && !strings.HasPrefix(v, "/") && v != "none" && v != "cdrom" {
			return fmt.Sprintf("unable to parse volume ID '%s'", v)
		}
	case "pve-storage-content":
		if !contents[v] {
			return fmt.Sprintf("invalid content type '%s'", v)
		}
	case "email", "email-opt":
		if !emailRE.MatchString(v) {
			return "value does not look like a valid email address"
		}
	case "mac-addr":
		if !macRE.MatchString(v) {
			return "value does not look like a valid unicast MAC address"
		}
		b, _ := strconv.ParseUint(v[:2], 16, 8)
		if b&1 == 1 {
			return "value does not look like a valid unicast MAC address"
		}
	case "ipv4":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return "value does not look like a valid IPv4 address"
		}
	case "ipv6":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is6() {
			return "value does not look like a valid IPv6 address"
		}
	case "ip":
		if _, err := netip.ParseAddr(v); err != nil {
			return "value does not look like a valid IP address"
		}
	case "ipv4mask":
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return "value does not look like a valid IP netmask"
		}
	case "CIDR", "CIDRv4", "CIDRv6":
		pfx, err := netip.ParsePrefix(v)
		if err != nil || (name == "CIDRv4" && !pfx.Addr().Is4()) || (name == "CIDRv6" && !pfx.Addr().Is6()) {
			return "value does not look like a valid CIDR network"
		}
	case "IPorCIDR":
		if !isIPorCIDR(v) {
			return "value does not look like a valid IP address or CIDR network"
		}
	case "IPorCIDRorAlias":
		if !isIPorCIDR(v) && !aliasRE.MatchString(v) {
			return "value does not look like a valid IP address or CIDR network"
		}
	case "pve-fw-addr-spec":
		for _, item := range strings.Split(v, ",") {
			if i := strings.Index(item, "-"); i > 0 && isIPorCIDR(item[:i]) {
				item = item[:i] // an address range a-b
			}
			if !isIPorCIDR(item) && !aliasRE.MatchString(strings.TrimPrefix(item, "+")) {
				return fmt.Sprintf("invalid address spec '%s'", v)
			}
		}
	case "pve-fw-dport-spec", "pve-fw-sport-spec":
		for _, item := range strings.Split(v, ",") {
			if !portRE.MatchString(item) {
				return fmt.Sprintf("invalid port '%s'", item)
			}
		}
	case "pve-fw-protocol-spec":
		if n, err := strconv.Atoi(v); (err != nil || n < 0 || n > 255) && !protocols[v] {
			return fmt.Sprintf("unknown protocol '%s'", v)
		}
	case "dns-name":
		if !dnsRE.MatchString(v) {
			return "value does not look like a valid DNS name"
		}
	case "pve-qm-ipconfig":
		return checkPropertyString(ipconfigFormat, v)
	case "pve-qm-cicustom":
		return checkPropertyString(cicustomFormat, v)
	case "pve-ipv4-config":
		if v != "dhcp" && v != "manual" && checkFormat("CIDRv4", v) != "" {
			return "invalid IPv4 configuration"
		}
	case "pve-ipv6-config":
		if v != "dhcp" && v != "manual" && v != "auto" && checkFormat("CIDRv6", v) != "" {
			return "invalid IPv6 configuration"
		}
	case "urlencoded":
		if _, err := url.QueryUnescape(v); err != nil {
			return fmt.Sprintf("invalid urlencoded string: %s", v)
		}
	}
	return ""
}

func isIPorCIDR(v string) bool {
	if _, err := netip.ParseAddr(v); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(v)
	return err == nil
}

func optStr(format string) *prop { return &prop{Type: "string", Optional: true, fmtName: format} }

// The named formats pve-qm-ipconfig and pve-qm-cicustom are property strings
// that the schema only names; their keys are those of qemu-server.
var (
	ipconfigFormat = map[string]*prop{
		"ip":  {Type: "string", Optional: true, fmtName: "pve-ipv4-config"},
		"gw":  optStr("ipv4"),
		"ip6": {Type: "string", Optional: true, fmtName: "pve-ipv6-config"},
		"gw6": optStr("ipv6"),
	}
	cicustomFormat = map[string]*prop{
		"meta": optStr("pve-volume-id"), "network": optStr("pve-volume-id"),
		"user": optStr("pve-volume-id"), "vendor": optStr("pve-volume-id"),
	}
)

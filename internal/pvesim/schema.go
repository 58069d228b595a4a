package pvesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// SchemaFile is the file name of the Proxmox VE API schema the simulator reads.
const SchemaFile = "pve-api-schema-9.1.json"

// ErrNoSchema is returned (wrapped) when the schema file cannot be found.
var ErrNoSchema = errors.New("proxmox api schema not found")

// SchemaPath returns where the schema is expected: $PVESIM_SCHEMA if set,
// otherwise ../shared/proxmox/pve-api-schema-9.1.json relative to the
// directory holding go.mod (found by walking up from the working directory).
func SchemaPath() (string, error) {
	if p := os.Getenv("PVESIM_SCHEMA"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the proxmox api schema: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "proxmox", SchemaFile), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("finding the proxmox api schema: no go.mod above the working directory (set PVESIM_SCHEMA): %w", ErrNoSchema)
		}
		dir = parent
	}
}

// Schema is the parsed API schema: every path template with its methods.
type Schema struct {
	endpoints []*endpoint // sorted for matching: literal segments win over parameters
}

type endpoint struct {
	template string
	segs     []string // "{node}" for parameters
	methods  map[string]*method
}

type method struct {
	Name        string          `json:"name"`
	Method      string          `json:"method"`
	Parameters  paramSet        `json:"parameters"`
	Permissions json.RawMessage `json:"permissions"`
	AllowToken  int             `json:"allowtoken"`
	indexed     []indexedParam
}

type paramSet struct {
	Properties map[string]*prop `json:"properties"`
}

type indexedParam struct {
	prefix string
	prop   *prop
}

// prop is one parameter (or one key of a property-string format).
type prop struct {
	Type       string           `json:"type"`
	Format     json.RawMessage  `json:"format"`
	Optional   flag             `json:"optional"`
	Enum       []any            `json:"enum"`
	Minimum    *num             `json:"minimum"`
	Maximum    *num             `json:"maximum"`
	MaxLength  *num             `json:"maxLength"`
	MinLength  *num             `json:"minLength"`
	Pattern    string           `json:"pattern"`
	Alias      string           `json:"alias"`
	KeyAlias   string           `json:"keyAlias"`
	DefaultKey flag             `json:"default_key"`
	Items      *prop            `json:"items"`
	Requires   json.RawMessage  `json:"requires"`
	Default    json.RawMessage  `json:"default"`
	Desc       string           `json:"description"`
	fmtName    string           // named format, e.g. "pve-vmid"
	fmtObj     map[string]*prop // property-string format
	re         *regexp.Regexp
}

// num decodes a number written as a JSON number or string.
type num float64

func (n *num) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(strings.Trim(string(b), `"`), 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", b)
	}
	*n = num(f)
	return nil
}

// flag decodes 0/1, "1", true/false.
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	*f = flag(s == "1" || s == "true")
	return nil
}

type schemaNode struct {
	Path     string             `json:"path"`
	Info     map[string]*method `json:"info"`
	Children []*schemaNode      `json:"children"`
}

var schemaCache struct {
	sync.Mutex
	byPath map[string]*Schema
}

// LoadSchema reads and compiles the schema at path. Results are cached per path.
func LoadSchema(path string) (*Schema, error) {
	schemaCache.Lock()
	defer schemaCache.Unlock()
	if s, ok := schemaCache.byPath[path]; ok {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("reading the proxmox api schema: expected at %s (or set PVESIM_SCHEMA): %w", path, ErrNoSchema)
		}
		return nil, fmt.Errorf("reading the proxmox api schema: %w", err)
	}
	var roots []*schemaNode
	if err := json.Unmarshal(data, &roots); err != nil {
		return nil, fmt.Errorf("parsing the proxmox api schema %s: %w", path, err)
	}
	s := &Schema{}
	var walk func(n *schemaNode) error
	walk = func(n *schemaNode) error {
		if len(n.Info) > 0 {
			ep := &endpoint{template: n.Path, segs: splitPath(n.Path), methods: map[string]*method{}}
			for m, info := range n.Info {
				if err := info.compile(); err != nil {
					return fmt.Errorf("%s %s: %w", m, n.Path, err)
				}
				ep.methods[m] = info
			}
			s.endpoints = append(s.endpoints, ep)
		}
		for _, c := range n.Children {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := walk(r); err != nil {
			return nil, fmt.Errorf("compiling the proxmox api schema: %w", err)
		}
	}
	// Literal segments win over parameters, segment by segment.
	sort.SliceStable(s.endpoints, func(i, j int) bool {
		a, b := s.endpoints[i].segs, s.endpoints[j].segs
		for k := 0; k < len(a) && k < len(b); k++ {
			pa, pb := isParamSeg(a[k]), isParamSeg(b[k])
			if pa != pb {
				return !pa
			}
		}
		return len(a) < len(b)
	})
	if schemaCache.byPath == nil {
		schemaCache.byPath = map[string]*Schema{}
	}
	schemaCache.byPath[path] = s
	return s, nil
}

func (m *method) compile() error {
	for name, p := range m.Parameters.Properties {
		if err := p.compile(); err != nil {
			return fmt.Errorf("parameter %s: %w", name, err)
		}
		if prefix, ok := strings.CutSuffix(name, "[n]"); ok {
			m.indexed = append(m.indexed, indexedParam{prefix: prefix, prop: p})
		}
	}
	return nil
}

func (p *prop) compile() error {
	if len(p.Format) > 0 {
		switch p.Format[0] {
		case '"':
			if err := json.Unmarshal(p.Format, &p.fmtName); err != nil {
				return err
			}
		case '{':
			if err := json.Unmarshal(p.Format, &p.fmtObj); err != nil {
				return err
			}
			for _, sub := range p.fmtObj {
				if err := sub.compile(); err != nil {
					return err
				}
			}
		}
	}
	if p.Pattern != "" {
		re, err := regexp.Compile(`^(?:` + perlToRE2(p.Pattern) + `)$`)
		if err != nil {
			return fmt.Errorf("pattern %q: %w", p.Pattern, err)
		}
		p.re = re
	}
	if p.Items != nil {
		return p.Items.compile()
	}
	return nil
}

var (
	perlGroupRE = regexp.MustCompile(`\(\?\^([a-z]*):`)
	bigRepeatRE = regexp.MustCompile(`\{(\d+),(\d{4,})\}`)
)

// perlToRE2 rewrites the Perl-only parts of the schema's patterns: (?^i:...)
// groups, and repeat counts above RE2's limit of 1000 (made unbounded).
func perlToRE2(pat string) string {
	pat = perlGroupRE.ReplaceAllString(pat, "(?$1:")
	return bigRepeatRE.ReplaceAllString(pat, "{$1,}")
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func isParamSeg(s string) bool { return strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") }

// match finds the endpoint for a request path (already split and unescaped)
// and returns the path parameters.
func (s *Schema) match(segs []string) (*endpoint, map[string]string) {
	for _, ep := range s.endpoints {
		if len(ep.segs) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for i, t := range ep.segs {
			if isParamSeg(t) {
				params[t[1:len(t)-1]] = segs[i]
				continue
			}
			if t != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return ep, params
		}
	}
	return nil, nil
}

// Templates lists every path template in the schema.
func (s *Schema) Templates() []string {
	out := make([]string, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		out = append(out, ep.template)
	}
	sort.Strings(out)
	return out
}

// maxIndex bounds indexed parameters such as net[n] (PVE's limits).
var maxIndex = map[string]int{
	"net": 31, "ipconfig": 31, "scsi": 30, "virtio": 15, "sata": 5, "ide": 3,
	"unused": 255, "hostpci": 15, "serial": 3, "parallel": 2, "usb": 13,
	"numa": 7, "virtiofs": 9, "mp": 255, "dev": 255, "link": 7, "acmedomain": 4,
}

var indexRE = regexp.MustCompile(`^([a-z]+)(\d+)$`)

// lookup finds the schema of a parameter name, resolving indexed names.
func (m *method) lookup(name string) *prop {
	if p, ok := m.Parameters.Properties[name]; ok {
		return p
	}
	sub := indexRE.FindStringSubmatch(name)
	if sub == nil {
		return nil
	}
	for _, ix := range m.indexed {
		if ix.prefix != sub[1] {
			continue
		}
		if len(sub[2]) > 1 && sub[2][0] == '0' {
			return nil
		}
		n := 0
		fmt.Sscan(sub[2], &n)
		limit, ok := maxIndex[ix.prefix]
		if !ok {
			limit = 255
		}
		if n > limit {
			return nil
		}
		return ix.prop
	}
	return nil
}

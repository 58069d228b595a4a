package spec

import (
	"encoding"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// The decoder walks the YAML syntax tree and fills the Go value by
// reflection. It is strict (unknown keys are errors) and keeps going after a
// problem, so that one run reports every mistake in the file, each with its
// line, column and YAML path. goccy/go-yaml's own decoder stops at the first
// error, which is why this walk exists.

const (
	maxDepth = 32     // nesting deeper than any lab needs
	maxNodes = 100000 // bounds alias expansion ("billion laughs")
)

type decoder struct {
	r       *report
	anchors map[string]ast.Node
	nodes   int
	depth   int
	tooBig  bool
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func tokenPos(tk *token.Token) pos {
	if tk == nil || tk.Position == nil {
		return pos{}
	}
	return pos{tk.Position.Line, tk.Position.Column}
}

func nodePos(n ast.Node) pos {
	if n == nil {
		return pos{}
	}
	if m, ok := n.(*ast.MappingNode); ok && len(m.Values) > 0 && m.Values[0].Key != nil {
		return tokenPos(m.Values[0].Key.GetToken())
	}
	return tokenPos(n.GetToken())
}

// collectAnchors records every anchor so that aliases can be resolved.
func (d *decoder) collectAnchors(n ast.Node) {
	ast.Walk(visitor(func(n ast.Node) {
		if a, ok := n.(*ast.AnchorNode); ok && a.Name != nil {
			d.anchors[a.Name.GetToken().Value] = a.Value
		}
	}), n)
}

type visitor func(ast.Node)

func (v visitor) Visit(n ast.Node) ast.Visitor { v(n); return v }

// resolve looks through anchors, aliases and tags to the node that holds
// the value. It returns nil for a missing value.
func (d *decoder) resolve(n ast.Node, path string) ast.Node {
	for range maxDepth {
		switch x := n.(type) {
		case *ast.AnchorNode:
			n = x.Value
		case *ast.TagNode:
			n = x.Value
		case *ast.AliasNode:
			name := ""
			if x.Value != nil {
				name = x.Value.GetToken().Value
			}
			target, ok := d.anchors[name]
			if !ok {
				d.r.fail(nodePos(x), path, "define the anchor (&"+name+") before using it", "alias *%s refers to no anchor", name)
				return nil
			}
			n = target
		default:
			return n
		}
	}
	d.r.fail(nodePos(n), path, "", "aliases nest too deeply")
	return nil
}

// scalar returns the text of a scalar node.
func scalar(n ast.Node) (string, bool) {
	switch x := n.(type) {
	case *ast.StringNode:
		return x.Value, true
	case *ast.LiteralNode:
		if x.Value == nil {
			return "", true
		}
		return x.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return x.GetToken().Value, true
	}
	return "", false
}

// describe names a node's kind for messages.
func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return fmt.Sprintf("the string %q", scalarText(n))
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "the number " + scalarText(n)
	case *ast.BoolNode:
		return "the boolean " + scalarText(n)
	}
	return "a " + strings.ToLower(n.Type().String())
}

// scalarText is scalar without the ok, for nodes known to be scalars.
func scalarText(n ast.Node) string {
	s, _ := scalar(n)
	return s
}

// decode fills v from node n found at path.
func (d *decoder) decode(n ast.Node, path string, v reflect.Value) {
	if d.tooBig {
		return
	}
	d.nodes++
	if d.nodes > maxNodes {
		d.tooBig = true
		d.r.fail(nodePos(n), path, "remove aliases that expand recursively", "the document expands to more than %d values", maxNodes)
		return
	}
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > maxDepth {
		d.r.fail(nodePos(n), path, "", "the document nests more than %d levels deep", maxDepth)
		return
	}
	orig := n
	n = d.resolve(n, path)
	if n == nil {
		return
	}
	if _, ok := n.(*ast.NullNode); ok {
		return // absent: keep the zero value, defaults fill it later
	}
	at := nodePos(n)
	if _, alias := orig.(*ast.AliasNode); alias {
		at = nodePos(orig) // point at the use, not at the anchor
	}

	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler) {
		text, ok := scalar(n)
		if !ok {
			d.r.fail(at, path, example(v.Type()), "want %s, got %s", typeName(v.Type()), describe(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(text)); err != nil {
			d.r.fail(at, path, example(v.Type()), "%s", textError(v.Type(), text, err))
		}
		return
	}

	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Map:
		m, ok := n.(*ast.MappingNode)
		if !ok {
			d.r.fail(at, path, "", "want a mapping of names to values, got %s", describe(n))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, kv := range m.Values {
			key, kat, ok := d.key(kv, path)
			if !ok {
				continue
			}
			p := child(path, key)
			d.r.at[p] = kat
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(kv.Value, p, elem)
			v.SetMapIndex(reflect.ValueOf(key), elem)
		}
	case reflect.Slice:
		s, ok := n.(*ast.SequenceNode)
		if !ok {
			d.r.fail(at, path, "write one item per line, each starting with \"- \"", "want a list, got %s", describe(n))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(s.Values), len(s.Values))
		for i, item := range s.Values {
			p := index(path, i)
			d.r.at[p] = nodePos(item)
			d.decode(item, p, out.Index(i))
		}
		v.Set(out)
	case reflect.String:
		text, ok := scalar(n)
		if !ok {
			d.r.fail(at, path, "", "want a string, got %s", describe(n))
			return
		}
		v.SetString(text)
	case reflect.Int, reflect.Int64, reflect.Int32:
		in, ok := n.(*ast.IntegerNode)
		if !ok {
			hint := ""
			if s, isStr := n.(*ast.StringNode); isStr && s.Token != nil && (s.Token.Type == token.DoubleQuoteType || s.Token.Type == token.SingleQuoteType) {
				hint = "remove the quotes around the number"
			}
			d.r.fail(at, path, hint, "want a whole number, got %s", describe(n))
			return
		}
		var i int64
		switch x := in.Value.(type) {
		case int64:
			i = x
		case uint64:
			if x > 1<<62 {
				d.r.fail(at, path, "", "number %s is too large", scalarText(n))
				return
			}
			i = int64(x)
		}
		if v.OverflowInt(i) {
			d.r.fail(at, path, "", "number %d is too large", i)
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		b, ok := n.(*ast.BoolNode)
		if !ok {
			d.r.fail(at, path, "", "want true or false, got %s", describe(n))
			return
		}
		v.SetBool(b.Value)
	default:
		d.r.fail(at, path, "", "cannot decode into %s", v.Type())
	}
}

// key returns the text and position of a mapping key.
func (d *decoder) key(kv *ast.MappingValueNode, path string) (string, pos, bool) {
	if kv.Key == nil {
		return "", pos{}, false
	}
	kat := tokenPos(kv.Key.GetToken())
	if kv.Key.IsMergeKey() {
		d.r.fail(kat, path, "repeat the values instead of merging them", "merge keys (<<) are not supported")
		return "", kat, false
	}
	kn := d.resolve(kv.Key, path)
	key, ok := scalar(kn)
	if !ok {
		d.r.fail(kat, path, "", "a key must be a plain name")
		return "", kat, false
	}
	return key, kat, true
}

func (d *decoder) decodeStruct(n ast.Node, path string, v reflect.Value) {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		d.r.fail(nodePos(n), path, "write the fields as indented key: value lines", "want a mapping, got %s", describe(n))
		return
	}
	fields := fieldsOf(v.Type())
	for _, kv := range m.Values {
		key, kat, ok := d.key(kv, path)
		if !ok {
			continue
		}
		p := child(path, key)
		idx, known := fields.byName[key]
		if !known {
			d.r.fail(kat, p, unknownKeyHint(path, key, fields.names), "unknown key %q", key)
			continue
		}
		d.r.at[p] = kat
		d.decode(kv.Value, p, v.FieldByIndex(idx))
	}
}

// structFields is the YAML view of a struct type: key name to field index,
// with inline structs flattened.
type structFields struct {
	byName map[string][]int
	names  []string
}

func fieldsOf(t reflect.Type) structFields {
	sf := structFields{byName: map[string][]int{}}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			idx := append(slices.Clone(prefix), i)
			if strings.Contains(opts, "inline") {
				walk(f.Type, idx)
				continue
			}
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			sf.byName[name] = idx
			sf.names = append(sf.names, name)
		}
	}
	walk(t, nil)
	return sf
}

// secretKeys are keys people write when they try to put a credential in the
// spec. The spec never holds one.
var secretKeys = map[string]bool{"token": true, "secret": true, "tokensecret": true, "password": true,
	"apitoken": true, "key": true, "privatekey": true}

func unknownKeyHint(path, key string, known []string) string {
	if secretKeys[strings.ToLower(key)] {
		switch {
		case path == "host.proxmox":
			return "secrets never go in lab.yaml: put the token secret in a file (tokenFile: ~/.config/homelab/pve-token, mode 0600) or an environment variable (tokenEnv: PVE_TOKEN)"
		case strings.HasPrefix(path, "vpn.peers"):
			return "private keys never go in lab.yaml: leave the key out and homelab generates it in the encrypted state folder, or give only publicKey"
		default:
			return "secrets never go in lab.yaml: homelab keeps them encrypted in the state folder"
		}
	}
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf("keys are case-sensitive: did you mean %q?", k)
		}
		if dist := editDistance(strings.ToLower(k), strings.ToLower(key)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	where := "here"
	if path != "" {
		where = "in " + path
	}
	return fmt.Sprintf("known keys %s: %s", where, strings.Join(known, ", "))
}

// editDistance is the Levenshtein distance, for "did you mean" hints.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	prefixType   = reflect.TypeFor[netip.Prefix]()
	addrType     = reflect.TypeFor[netip.Addr]()
	sizeType     = reflect.TypeFor[Size]()
	durationType = reflect.TypeFor[Duration]()
)

func typeName(t reflect.Type) string {
	switch t {
	case prefixType:
		return "a CIDR"
	case addrType:
		return "an IP address"
	case sizeType:
		return "a size"
	case durationType:
		return "a duration"
	}
	return "a " + t.Name()
}

func example(t reflect.Type) string {
	switch t {
	case prefixType:
		return "write a network address and prefix length, for example 10.10.1.0/24"
	case addrType:
		return "write an IPv4 address, for example 10.10.1.20"
	}
	return "" // Size and Duration say it in their own message
}

// textError rewrites parse errors of the standard library into one short
// sentence; Size and Duration already produce their own.
func textError(t reflect.Type, text string, err error) string {
	switch t {
	case prefixType:
		return fmt.Sprintf("invalid CIDR %q", text)
	case addrType:
		return fmt.Sprintf("invalid IP address %q", text)
	}
	return err.Error()
}

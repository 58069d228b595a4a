package spec

import (
	_ "embed"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strings"
	"sync"
)

// The JSON Schema is generated from the Go types by reflection; field
// descriptions are the doc comments of types.go itself, read from the
// embedded source, so that the schema and the code cannot drift apart.

//go:embed types.go
var typesSource string

// enums lists the allowed values of string fields, by Type.Field.
var enums = map[string][]string{
	"Host.Provider":          {"local", "proxmox"},
	"Network.Role":           {"wan", "admin", "apps"},
	"Frontend.Protocol":      {"tcp", "udp"},
	"Frontend.Balance":       {"roundrobin", "leastconn", "p2c", "hash"},
	"Frontend.ProxyProtocol": {"", "v1", "v2"},
	"HealthCheck.Type":       {"tcp", "http", "https"},
	"BackendRef.Role":        {"worker", "controlplane"},
	"GitOps.Engine":          {"flux"},
}

// required lists the keys a spec must give, by type.
var required = map[string][]string{
	"Lab":        {"apiVersion", "kind", "name", "host", "cluster"},
	"Host":       {"memory", "disk", "cores"},
	"Network":    {"role", "cidr"},
	"Proxmox":    {"endpoint", "node", "storage", "tokenID"},
	"Cluster":    {"talosVersion", "kubernetesVersion", "controlPlanes"},
	"NodePool":   {"count"},
	"Frontend":   {"name", "port", "backends"},
	"BackendRef": {"role", "port"},
	"Peer":       {"name"},
	"App":        {"name"},
}

// fieldDocs reads the doc comments of types.go: "Type.Field" and "Type".
var fieldDocs = sync.OnceValue(func() map[string]string {
	docs := map[string]string{}
	f, err := parser.ParseFile(token.NewFileSet(), "types.go", typesSource, parser.ParseComments)
	if err != nil {
		return docs
	}
	clean := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, spec := range gd.Specs {
			ts, ok := spec.(*ast.TypeSpec)
			if !ok {
				continue
			}
			if gd.Doc != nil {
				docs[ts.Name.Name] = clean(gd.Doc.Text())
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			for _, fld := range st.Fields.List {
				if fld.Doc == nil {
					continue
				}
				for _, n := range fld.Names {
					docs[ts.Name.Name+"."+n.Name] = clean(fld.Doc.Text())
				}
			}
		}
	}
	return docs
})

// JSONSchema returns a JSON Schema (draft 2020-12) of lab.yaml, for
// editors: with the yaml-language-server, add
// "# yaml-language-server: $schema=lab.schema.json" at the top of lab.yaml.
func JSONSchema() []byte {
	s := schemaOf(reflect.TypeFor[Lab]())
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://github.com/homelab-dev/homelab/lab.schema.json"
	s["title"] = "homelab lab.yaml (" + APIVersion + ")"
	props := s["properties"].(map[string]any)
	props["apiVersion"].(map[string]any)["const"] = APIVersion
	props["kind"].(map[string]any)["const"] = Kind
	props["name"].(map[string]any)["pattern"] = `^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$`
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		panic(err) // the schema is built from maps of plain values
	}
	return append(out, '\n')
}

func schemaOf(t reflect.Type) map[string]any {
	switch t {
	case sizeType:
		return map[string]any{"type": []string{"string", "integer"}, "pattern": `^[0-9]+ ?(B|KiB|MiB|GiB|TiB)?$`,
			"description": "a size with a binary unit, for example 512MiB or 16GiB"}
	case durationType:
		return map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`,
			"description": "a duration, for example 2s or 500ms"}
	case prefixType:
		return map[string]any{"type": "string", "pattern": `^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$`,
			"description": "an IPv4 CIDR, for example 10.10.1.0/24"}
	case addrType:
		return map[string]any{"type": "string", "format": "ipv4"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Int, reflect.Int64, reflect.Int32:
		return map[string]any{"type": "integer"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Struct:
		props := map[string]any{}
		addStructProps(t, props)
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if d := fieldDocs()[t.Name()]; d != "" {
			s["description"] = d
		}
		if req := required[t.Name()]; len(req) > 0 {
			s["required"] = req
		}
		return s
	}
	return map[string]any{}
}

func addStructProps(t reflect.Type, props map[string]any) {
	docs := fieldDocs()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			addStructProps(f.Type, props)
			continue
		}
		if name == "-" {
			continue
		}
		p := schemaOf(f.Type)
		key := t.Name() + "." + f.Name
		if d := docs[key]; d != "" {
			p["description"] = d
		}
		if e, ok := enums[key]; ok {
			p["enum"] = e
		}
		props[name] = p
	}
}

package spec

import (
	"encoding/json"
	"testing"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

func TestJSONSchema(t *testing.T) {
	var s map[string]any
	if err := json.Unmarshal(JSONSchema(), &s); err != nil {
		t.Fatalf("JSONSchema() is not JSON: %v", err)
	}
	props := s["properties"].(map[string]any)
	for _, k := range []string{"apiVersion", "kind", "name", "host", "networks", "vpn", "loadBalancer", "manager", "cluster", "gitops"} {
		if _, ok := props[k]; !ok {
			t.Errorf("schema has no property %q", k)
		}
	}
	if s["additionalProperties"] != false {
		t.Errorf("top level allows unknown keys")
	}
	host := props["host"].(map[string]any)
	prov := host["properties"].(map[string]any)["provider"].(map[string]any)
	if prov["description"] == nil || len(prov["enum"].([]any)) != 2 {
		t.Errorf("host.provider = %v, want a description and an enum", prov)
	}
	// Inline Guest fields are flattened into vpn.
	vpn := props["vpn"].(map[string]any)["properties"].(map[string]any)
	for _, k := range []string{"vmid", "cores", "memory", "addresses", "listenPort", "peers"} {
		if _, ok := vpn[k]; !ok {
			t.Errorf("vpn schema lacks %q", k)
		}
	}
	if len(fieldDocs()) < 50 {
		t.Errorf("only %d documented fields read from types.go", len(fieldDocs()))
	}
}

// TestSchemaCoversReference walks every key of the reference labs and
// checks the schema describes it, so editors never flag a valid file.
func TestSchemaCoversReference(t *testing.T) {
	var root map[string]any
	if err := json.Unmarshal(JSONSchema(), &root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Provider{ProviderLocal, ProviderProxmox} {
		visited := 0
		f, err := parser.ParseBytes(Reference(p), 0)
		if err != nil {
			t.Fatal(err)
		}
		var walk func(n ast.Node, s map[string]any, path string)
		walk = func(n ast.Node, s map[string]any, path string) {
			switch x := n.(type) {
			case *ast.MappingNode:
				for _, kv := range x.Values {
					visited++
					key := kv.Key.GetToken().Value
					var sub map[string]any
					if props, ok := s["properties"].(map[string]any); ok {
						sub, _ = props[key].(map[string]any)
					} else if ap, ok := s["additionalProperties"].(map[string]any); ok {
						sub = ap
					}
					if sub == nil {
						t.Errorf("%s: schema has no %s.%s", p, path, key)
						continue
					}
					walk(kv.Value, sub, path+"."+key)
				}
			case *ast.SequenceNode:
				items, _ := s["items"].(map[string]any)
				if items == nil {
					t.Errorf("%s: schema of %s is not an array", p, path)
					return
				}
				for _, v := range x.Values {
					walk(v, items, path+"[]")
				}
			}
		}
		walk(f.Docs[0].Body, root, "")
		if visited < 60 {
			t.Errorf("%s: walked only %d keys of the reference", p, visited)
		}
	}
}

package spec

import (
	"encoding/json"
	"testing"
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

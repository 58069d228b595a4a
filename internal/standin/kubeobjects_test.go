package standin

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The node-removal endpoints answer what the API would and refuse what
// they do not implement instead of ignoring it.
func TestKubeObjectsStrict(t *testing.T) {
	p := newPKI(t)
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs}
	start(t, n)
	n.AddKubeNode("w-1")
	n.AddPod("apps", "web-1", "w-1", "ReplicaSet")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.kubePool, ServerName: "kubernetes", Certificates: []tls.Certificate{p.kubeClient}}}}
	base := "https://" + addr(t, n, ServiceKube)
	merge := "application/merge-patch+json"
	eviction := `{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web-1","namespace":"apps"}}`
	tests := []struct {
		name, method, path, ctype, body string
		wantCode                        int
		wantBody                        string
	}{
		{"get self (bootstrapped)", "GET", "/api/v1/nodes/cp-1", "", "", 200, `"kind":"Node"`},
		{"get unknown node", "GET", "/api/v1/nodes/w-9", "", "", 404, `nodes \"w-9\" not found`},
		{"bad node name", "GET", "/api/v1/nodes/W_1", "", "", 400, "not a valid name"},
		{"patch json content type", "PATCH", "/api/v1/nodes/w-1", "application/json", `{"spec":{"unschedulable":true}}`, 415, "merge patches"},
		{"patch unknown field", "PATCH", "/api/v1/nodes/w-1", merge, `{"spec":{"unschedulable":true,"taints":[]}}`, 400, "unknown field"},
		{"patch nothing", "PATCH", "/api/v1/nodes/w-1", merge, `{}`, 422, "spec.unschedulable only"},
		{"cordon", "PATCH", "/api/v1/nodes/w-1", merge, `{"spec":{"unschedulable":true}}`, 200, `"unschedulable":true`},
		{"pods without selector", "GET", "/api/v1/pods", "", "", 400, "fieldSelector"},
		{"pods other parameter", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dw-1&limit=5", "", "", 400, `limit`},
		{"pods of w-1", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dw-1", "", "", 200, `"name":"web-1"`},
		{"eviction wrong kind", "POST", "/api/v1/namespaces/apps/pods/web-1/eviction", "application/json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1"}}`, 400, "policy/v1 Eviction"},
		{"eviction other pod", "POST", "/api/v1/namespaces/apps/pods/web-1/eviction", "application/json", strings.Replace(eviction, `"web-1"`, `"web-2"`, 1), 400, "policy/v1 Eviction"},
		{"eviction", "POST", "/api/v1/namespaces/apps/pods/web-1/eviction", "application/json", eviction, 201, "Success"},
		{"eviction again", "POST", "/api/v1/namespaces/apps/pods/web-1/eviction", "application/json", eviction, 404, "not found"},
		{"delete with options", "DELETE", "/api/v1/nodes/w-1", "application/json", `{"gracePeriodSeconds":0}`, 400, "DeleteOptions"},
		{"delete", "DELETE", "/api/v1/nodes/w-1", "", "", 200, "Success"},
		{"delete again", "DELETE", "/api/v1/nodes/w-1", "", "", 404, "not found"},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if tt.body == "" {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		if tt.ctype != "" {
			req.Header.Set("Content-Type", tt.ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || !strings.Contains(string(body), tt.wantBody) {
			t.Errorf("%s: %s %s = %d %s, want %d containing %q", tt.name, tt.method, tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
		}
	}
	if _, ok := n.KubeNodes()["w-1"]; ok {
		t.Error("w-1 still a node after DELETE")
	}
}

// Node objects survive a control plane's restart, as in etcd.
func TestKubeNodesKept(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs, StateDir: dir}
	start(t, n)
	n.AddKubeNode("w-1")
	n.AddKubeNode("w-2")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.kubePool, ServerName: "kubernetes", Certificates: []tls.Certificate{p.kubeClient}}}}
	req, _ := http.NewRequest("PATCH", "https://"+addr(t, n, ServiceKube)+"/api/v1/nodes/w-1", strings.NewReader(`{"spec":{"unschedulable":true}}`))
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	n.Close()
	n2 := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs, StateDir: dir}
	start(t, n2)
	got := n2.KubeNodes()
	if len(got) != 3 || !got["w-1"] || got["w-2"] || got["cp-1"] {
		t.Errorf("node objects after a restart = %v, want cp-1, w-1 (cordoned) and w-2", got)
	}
}

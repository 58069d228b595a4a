package bootstrap

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/standin"
)

func testKubeconfig(t testing.TB, server string) string {
	ca, caKey, err := standin.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := standin.IssueClientCert(ca, caKey, "admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	b := base64.StdEncoding.EncodeToString
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: admin@lab
  user: {client-certificate-data: %s, client-key-data: %s}
contexts:
- name: admin@lab
  context: {cluster: lab, user: admin@lab}
current-context: admin@lab
`, server, b(ca), b(crt), b(key))
}

func TestParseKubeconfig(t *testing.T) {
	good := testKubeconfig(t, "https://10.10.1.10:6443")
	kc, err := ParseKubeconfig([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if kc.Server != "https://10.10.1.10:6443" || kc.Context != "admin@lab" {
		t.Errorf("ParseKubeconfig = server %q context %q", kc.Server, kc.Context)
	}
	tests := []struct{ name, in, want string }{
		{"not yaml", "{", "not a kubeconfig document"},
		{"no context", strings.Replace(good, "current-context: admin@lab", "current-context: other", 1), `current context "other" not found`},
		{"http", strings.Replace(good, "https://10.10.1.10:6443", "http://10.10.1.10:6443", 1), "is not an https URL"},
		{"no server", strings.Replace(good, `server: "https://10.10.1.10:6443", `, "", 1), "has no server"},
		{"no ca", strings.Replace(good, "certificate-authority-data:", "certificate-authority:", 1), "has no embedded CA"},
		{"no key", strings.Replace(good, "client-key-data:", "client-key:", 1), "has no embedded client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKubeconfig([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseKubeconfig() = %v, want error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
}

func FuzzParseKubeconfig(f *testing.F) {
	f.Add([]byte(testKubeconfig(f, "https://127.0.0.1:6443")))
	f.Add([]byte("current-context: a\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n"))
	f.Add([]byte("clusters: [{name: c, cluster: {server: 'https://x'}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kc, err := ParseKubeconfig(data)
		if err != nil {
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error quotes key material: %v", err)
			}
			return
		}
		if !strings.HasPrefix(kc.Server, "https://") || len(kc.CA) == 0 || len(kc.ClientKey) == 0 {
			t.Fatalf("accepted an incomplete kubeconfig: %+v", kc.Server)
		}
	})
}

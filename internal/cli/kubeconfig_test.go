package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestMergeKubeconfig(t *testing.T) {
	existing := `apiVersion: v1
kind: Config
clusters:
- name: work
  cluster: {server: https://work.example:6443}
- name: lab
  cluster: {server: https://old.example:6443}
users:
- name: me
  user: {token: abc}
contexts:
- name: work
  context: {cluster: work, user: me}
current-context: work
`
	lab := `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: https://10.10.1.10:6443}
users:
- name: admin@lab
  user: {client-certificate-data: Y2VydA==}
contexts:
- name: admin@lab
  context: {cluster: lab, user: admin@lab}
current-context: admin@lab
`
	tests := []struct {
		name, before string
		clusters     []string
	}{
		{"into an existing file", existing, []string{"work=https://work.example:6443", "lab=https://10.10.1.10:6443"}},
		{"into no file", "", []string{"lab=https://10.10.1.10:6443"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), ".kube", "config")
			if tt.before != "" {
				os.MkdirAll(filepath.Dir(target), 0o700)
				os.WriteFile(target, []byte(tt.before), 0o644)
			}
			ctx, err := mergeKubeconfig(target, []byte(lab))
			if err != nil || ctx != "admin@lab" {
				t.Fatalf("mergeKubeconfig() = %q, %v; want admin@lab", ctx, err)
			}
			fi, err := os.Stat(target)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("merged kubeconfig mode = %v, %v; want 0600", fi.Mode().Perm(), err)
			}
			data, _ := os.ReadFile(target)
			var got struct {
				Clusters []struct {
					Name    string
					Cluster struct{ Server string }
				}
				Current string `json:"current-context"`
			}
			if err := yaml.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			var cs []string
			for _, c := range got.Clusters {
				cs = append(cs, c.Name+"="+c.Cluster.Server)
			}
			if strings.Join(cs, " ") != strings.Join(tt.clusters, " ") || got.Current != "admin@lab" {
				t.Errorf("merged clusters %v, current %q; want %v, admin@lab", cs, got.Current, tt.clusters)
			}
		})
	}
	bad := filepath.Join(t.TempDir(), "config")
	os.WriteFile(bad, []byte("- just\n- a list\n"), 0o600)
	if _, err := mergeKubeconfig(bad, []byte(lab)); err == nil {
		t.Error("merging into a file that is not a kubeconfig succeeded")
	}
}

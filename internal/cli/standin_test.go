package cli

import (
	"strings"
	"testing"
)

func TestStandinFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"standin", "--role", "master", "--name", "n"}, `unknown role "master"`},
		{[]string{"standin", "--role", "worker"}, "no node name"},
		{[]string{"standin", "--name", "n", "--listen-admin", "10.0.0.300"}, "--listen-admin"},
		{[]string{"standin", "--name", "n", "--ingress-ports", "80"}, "--ingress-ports"},
		{[]string{"standin", "--name", "n", "--talos-ca", "/nonexistent/ca.crt"}, "no such file"},
	}
	for _, tt := range tests {
		code, _, stderr := runCLI(t, tt.args...)
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("homelab %s = %d %q, want an error containing %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
}

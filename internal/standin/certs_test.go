package standin

import (
	"bytes"
	"strings"
	"testing"
)

func TestFillCerts(t *testing.T) {
	ca, caKey, err := NewCA("talos")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := IssueCerts(ca, caKey, []string{"n"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      Certs
		wantErr string // "" for success
		keepCA  bool   // the given CA must be kept
	}{
		{"nothing: ephemeral", Certs{}, "", false},
		{"full pair", Certs{TalosCA: ca, TalosCert: cert, TalosKey: key}, "", true},
		{"CA and key: issued", Certs{TalosCA: ca, TalosCAKey: caKey}, "", true},
		{"pair without CA", Certs{TalosCert: cert, TalosKey: key}, "without the CA", false},
		{"cert without key", Certs{TalosCA: ca, TalosCert: cert}, "without its key", false},
		{"CA alone", Certs{TalosCA: ca}, "CA given without its key", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{Name: "n", Certs: tt.in}
			err := n.fillCerts()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("fillCerts() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("fillCerts(): %v", err)
			}
			c := n.Certs
			if _, err := serverTLS(c.TalosCert, c.TalosKey, c.TalosCA, 0); err != nil {
				t.Errorf("resulting Talos API TLS: %v", err)
			}
			if tt.keepCA && !bytes.Equal(c.TalosCA, ca) {
				t.Error("the given CA was replaced")
			}
		})
	}
}

func TestCertsWriteLoad(t *testing.T) {
	dir := t.TempDir()
	in := Certs{TalosCA: []byte("a"), TalosCert: []byte("b"), TalosKey: []byte("c"), KubeCA: []byte("d")}
	if err := in.Write(dir); err != nil {
		t.Fatal(err)
	}
	out, err := LoadCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(out.TalosCA)+string(out.TalosCert)+string(out.TalosKey)+string(out.KubeCA) != "abcd" || out.KubeKey != nil {
		t.Errorf("LoadCerts(Write(c)) = %+v", out)
	}
}

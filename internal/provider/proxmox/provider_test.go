package proxmox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/pvesim"
)

// hintOf returns the hint of an error, if it has one.
func hintOf(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}

func TestNewErrors(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	tests := []struct {
		name string
		edit func(o *Options)
		want string
		hint string
	}{
		{
			name: "refused token",
			edit: func(o *Options) { o.Token = "11111111-2222-4333-8444-555555555555" },
			want: `connecting to the proxmox API at ` + f.srv.URL + `: the API refused token "root@pam!pvesim" (401 invalid token value!)`,
			hint: "pveum user token list root@pam",
		},
		{
			name: "unknown node",
			edit: func(o *Options) { f.lab.Host.Proxmox.Node = "pve2" },
			want: `proxmox node "pve2" not found; the cluster has: pve`,
			hint: "set host.proxmox.node",
		},
		{
			name: "unknown storage",
			edit: func(o *Options) { f.lab.Host.Proxmox.Storage = "fast" },
			want: `storage "fast" (host.proxmox.storage) not found on node "pve"; it has: local, local-lvm`,
			hint: "pvesm status",
		},
		{
			name: "storage without import",
			edit: func(o *Options) { f.lab.Host.Proxmox.ImageStorage = "local-lvm" },
			want: `storage "local-lvm" (host.proxmox.imageStorage) on node "pve" does not hold content import, vztmpl, snippets`,
			hint: "pvesm set local-lvm --content images,rootdir,import,vztmpl,snippets",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.lab = refLab(t, f.srv.URL, f.srv.TokenID)
			o := f.options()
			tt.edit(&o)
			_, err := New(context.Background(), f.lab, o)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("New() error = %v\nwant %s", err, tt.want)
			}
			if h := hintOf(err); !strings.Contains(h, tt.hint) {
				t.Errorf("hint = %q, want it to mention %q", h, tt.hint)
			}
			if strings.Contains(err.Error()+hintOf(err), f.srv.TokenSecret) || strings.Contains(err.Error(), "11111111-2222") {
				t.Errorf("error or hint shows the token secret")
			}
		})
	}
}

func TestTLSFingerprint(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	t.Run("pinned matches", func(t *testing.T) {
		f.lab.Host.Proxmox.Fingerprint = strings.ToLower(f.srv.Fingerprint)
		o := f.options()
		o.HTTPClient = nil
		if _, err := New(context.Background(), f.lab, o); err != nil {
			t.Fatalf("New with the right fingerprint: %v", err)
		}
	})
	t.Run("pinned differs", func(t *testing.T) {
		wrong := "AA" + f.srv.Fingerprint[2:]
		if f.srv.Fingerprint[:2] == "AA" {
			wrong = "BB" + f.srv.Fingerprint[2:]
		}
		f.lab.Host.Proxmox.Fingerprint = wrong
		f.srv.ResetCalls()
		o := f.options()
		o.HTTPClient = nil
		_, err := New(context.Background(), f.lab, o)
		want := "connecting to the proxmox API at " + f.srv.URL + ": GET /nodes: the API's TLS certificate has fingerprint " + f.srv.Fingerprint + ", but the lab pins " + wrong
		if err == nil || err.Error() != want {
			t.Fatalf("New() error = %v\nwant %s", err, want)
		}
		if !strings.Contains(hintOf(err), "pvenode cert info") {
			t.Errorf("hint = %q", hintOf(err))
		}
		if n := f.srv.CallCount(); n != 0 {
			t.Errorf("the simulator saw %d requests; the token must not be sent to an unverified server", n)
		}
	})
	t.Run("ca file", func(t *testing.T) {
		f.lab.Host.Proxmox.Fingerprint = ""
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, f.srv.CAPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		f.lab.Host.Proxmox.CAFile = ca
		o := f.options()
		o.HTTPClient = nil
		if _, err := New(context.Background(), f.lab, o); err != nil {
			t.Fatalf("New with the CA file: %v", err)
		}
	})
	t.Run("system roots refuse a self-signed certificate", func(t *testing.T) {
		f.lab.Host.Proxmox.CAFile = ""
		o := f.options()
		o.HTTPClient = nil
		_, err := New(context.Background(), f.lab, o)
		if err == nil || !strings.Contains(err.Error(), "x509:") || !strings.Contains(hintOf(err), "caFile") {
			t.Fatalf("New() error = %v (hint %q), want an x509 error with a caFile hint", err, hintOf(err))
		}
	})
	t.Run("insecure warns", func(t *testing.T) {
		o := f.options()
		o.HTTPClient = nil
		o.Insecure = true
		if _, err := New(context.Background(), f.lab, o); err != nil {
			t.Fatalf("New --insecure: %v", err)
		}
		if !strings.Contains(f.log.String(), "warning: TLS verification of "+f.srv.URL+" is off (--insecure)") {
			t.Errorf("log = %q, want the insecure warning", f.log.String())
		}
	})
}

func TestTokenFile(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(f.srv.TokenSecret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.lab.Host.Proxmox.TokenFile = file
	o := f.options()
	o.Token = ""
	if _, err := New(context.Background(), f.lab, o); err != nil {
		t.Fatalf("New with a token file: %v", err)
	}
	want := "warning: token file " + file + " has mode 0644; other users can read the token (chmod 600 " + file + ")\n"
	if f.log.String() != want {
		t.Errorf("log = %q, want %q", f.log.String(), want)
	}
	if strings.Contains(f.log.String(), f.srv.TokenSecret) {
		t.Errorf("the log shows the secret")
	}

	f.lab.Host.Proxmox.TokenFile = ""
	f.lab.Host.Proxmox.TokenEnv = "HOMELAB_TEST_PVE_TOKEN"
	t.Setenv("HOMELAB_TEST_PVE_TOKEN", "")
	_, err := New(context.Background(), f.lab, o)
	if want := "the environment variable HOMELAB_TEST_PVE_TOKEN that should hold the proxmox token secret is empty"; err == nil || err.Error() != want {
		t.Errorf("New() with an empty variable = %v, want %s", err, want)
	}
	t.Setenv("HOMELAB_TEST_PVE_TOKEN", f.srv.TokenSecret)
	if _, err := New(context.Background(), f.lab, o); err != nil {
		t.Errorf("New with the token in the environment: %v", err)
	}
}

func TestBinaryMustBeLinuxAMD64(t *testing.T) {
	f := newFixture(t, pvesim.Options{})
	p := f.provider(t)
	bad := filepath.Join(t.TempDir(), "homelab-darwin")
	if err := os.WriteFile(bad, []byte("\xcf\xfa\xed\xfe mach-o"), 0o755); err != nil {
		t.Fatal(err)
	}
	p.opts.Binary = bad
	_, err := p.Desired(f.lab, f.arts)
	if want := bad + " is not a linux/amd64 executable, and the containers need one"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Desired() error = %v, want %s", err, want)
	}
	if !strings.Contains(hintOf(err), "GOOS=linux GOARCH=amd64") {
		t.Errorf("hint = %q", hintOf(err))
	}
}

package cli

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/vpn"
)

func TestVPNPeerCommands(t *testing.T) {
	dir := labDir(t)
	lab := filepath.Join(dir, "lab.yaml")
	pngPath := filepath.Join(dir, "tablet.png")

	code, stdout, stderr := runCLI(t, "vpn", "peer", "add", "tablet", "-f", lab, "--png", pngPath)
	if code != 0 {
		t.Fatalf("vpn peer add exited %d: %s", code, stderr)
	}
	for _, want := range []string{"added vpn peer tablet with tunnel address 10.99.0.", "scan with the WireGuard app", "▀", "run homelab apply"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("peer add output lacks %q:\n%s", want, stdout)
		}
	}
	conf := filepath.Join(dir, "tablet.conf")
	fi, err := os.Stat(conf)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client config: %v, want mode 0600", err)
	}
	data, _ := os.ReadFile(conf)
	cfg, err := vpn.Parse(data)
	if err != nil {
		t.Fatalf("the client config does not parse: %v", err)
	}
	if !vpn.IsClient(cfg) || len(cfg.Peers) != 1 || len(cfg.Peers[0].AllowedIPs) != 1 {
		t.Errorf("client config peers = %+v, want one server peer with the admin CIDR only", cfg.Peers)
	}
	if strings.Contains(stdout+stderr, cfg.Interface.PrivateKey.Base64()) {
		t.Error("the private key was printed in clear (only the QR code may carry it)")
	}
	img, err := os.ReadFile(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(img)); err != nil {
		t.Errorf("--png wrote no PNG: %v", err)
	}

	code, _, stderr = runCLI(t, "vpn", "peer", "add", "tablet", "-f", lab, "--no-qr")
	if code == 0 || !strings.Contains(stderr, "tablet exists already") || !strings.Contains(stderr, "hint: remove it first") {
		t.Errorf("second peer add = %d %q, want an error with a hint", code, stderr)
	}

	code, stdout, _ = runCLI(t, "vpn", "peer", "list", "-f", lab)
	if code != 0 || !strings.Contains(stdout, "tablet") || !strings.Contains(stdout, "peer add") || !strings.Contains(stdout, "lab.yaml") {
		t.Errorf("peer list = %d\n%s", code, stdout)
	}

	code, stdout, stderr = runCLI(t, "vpn", "peer", "remove", "tablet", "-f", lab)
	if code != 0 || !strings.Contains(stdout, "removed vpn peer tablet") {
		t.Errorf("peer remove = %d %q %q", code, stdout, stderr)
	}
	_, stdout, _ = runCLI(t, "vpn", "peer", "list", "-f", lab)
	if strings.Contains(stdout, "tablet") {
		t.Errorf("peer list after remove still shows tablet:\n%s", stdout)
	}
}

func TestParseIngressPorts(t *testing.T) {
	tests := []struct {
		in        string
		http, tls int
		wantErr   bool
	}{
		{"30080,30443", 30080, 30443, false},
		{" 80 , 443 ", 80, 443, false},
		{"30080", 0, 0, true},
		{"30080,0", 0, 0, true},
		{"a,b", 0, 0, true},
	}
	for _, tt := range tests {
		h, s, err := parseIngressPorts(tt.in)
		if (err != nil) != tt.wantErr || h != tt.http || s != tt.tls {
			t.Errorf("parseIngressPorts(%q) = %d, %d, %v; want %d, %d, error %v", tt.in, h, s, err, tt.http, tt.tls, tt.wantErr)
		}
	}
}

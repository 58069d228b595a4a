package cli

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// labDir copies render's test lab into a fresh folder, with the age
// identity kept outside it.
func labDir(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "render", "testdata", "lab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lab.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOMELAB_IDENTITY", filepath.Join(t.TempDir(), "identity.txt"))
	return dir
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRenderCommand(t *testing.T) {
	dir := labDir(t)
	out := filepath.Join(dir, "out")
	lab := filepath.Join(dir, "lab.yaml")
	code, stdout, stderr := runCLI(t, "render", "-f", lab, "--out", out)
	if code != 0 {
		t.Fatalf("homelab render exited %d: %s", code, stderr)
	}
	for _, want := range []string{"secrets: new ones saved", "rendered 20 artifacts", "0600  talos/lab-cp-1.yaml", "0644  nftables/host.nft", "0600  git/manager/ssh_host_ed25519_key"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("render output lacks %q:\n%s", want, stdout)
		}
	}
	// The same artifacts as apply builds: the VPN server knows homelab's
	// own peer.
	if !strings.Contains(stderr, "vpn: created homelab's own peer") {
		t.Errorf("render did not create homelab's own VPN peer: %s", stderr)
	}
	server, err := os.ReadFile(filepath.Join(out, "wireguard", "server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(server), OperatorPeer) {
		t.Errorf("wireguard/server.conf lacks the peer %s:\n(%d bytes)", OperatorPeer, len(server))
	}
	if _, err := os.Stat(filepath.Join(dir, ".homelab", "secrets.age")); err != nil {
		t.Errorf("no encrypted bundle in the state folder: %v", err)
	}
	fi, err := os.Stat(filepath.Join(out, "talos", "talosconfig"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("talosconfig: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	first, err := os.ReadFile(filepath.Join(out, "wireguard", "server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout+stderr, "PrivateKey") {
		t.Error("render printed secret material")
	}

	// Again: the same secrets, the same bytes.
	code, stdout, stderr = runCLI(t, "render", "-f", lab, "--out", out)
	if code != 0 {
		t.Fatalf("second homelab render exited %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "secrets: reused") {
		t.Errorf("second render did not reuse the secrets:\n%s", stdout)
	}
	second, _ := os.ReadFile(filepath.Join(out, "wireguard", "server.conf"))
	if !bytes.Equal(first, second) {
		t.Error("wireguard/server.conf changed between two renders")
	}
}

func TestRenderCommandErrors(t *testing.T) {
	dir := labDir(t)
	code, _, stderr := runCLI(t, "render", "-f", filepath.Join(dir, "missing.yaml"))
	if code == 0 || !strings.Contains(stderr, "hint: write the reference lab with homelab init") {
		t.Errorf("render of a missing spec: exit %d, stderr %q; want a failure with a hint", code, stderr)
	}
	code, _, stderr = runCLI(t, "render", "-f", filepath.Join(dir, "lab.yaml"), "--out", dir)
	if code == 0 || !strings.Contains(stderr, "hint: render into a folder of its own") {
		t.Errorf("render into the lab folder: exit %d, stderr %q; want a refusal with a hint", code, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: homelab/v1alpha1\nkind: Lab\nname: lab\nbogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, "render", "-f", bad)
	if code == 0 || !strings.Contains(stderr, "is not valid") || !strings.Contains(stderr, "bad.yaml:4:") {
		t.Errorf("render of an invalid spec: exit %d, stderr %q; want the diagnostics and a failure", code, stderr)
	}
}

func TestDiagramCommand(t *testing.T) {
	dir := labDir(t)
	svg := filepath.Join(dir, "lab.svg")
	code, stdout, stderr := runCLI(t, "diagram", "-f", filepath.Join(dir, "lab.yaml"), "--out", svg)
	if code != 0 {
		t.Fatalf("homelab diagram exited %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "wrote "+svg) {
		t.Errorf("diagram output = %q", stdout)
	}
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name
	}
	if err := xml.Unmarshal(data, &doc); err != nil || doc.XMLName.Local != "svg" {
		t.Errorf("diagram is not an SVG document: %v (root %q)", err, doc.XMLName.Local)
	}
	if _, err := os.Stat(filepath.Join(dir, ".homelab")); err == nil {
		t.Error("diagram created the state folder; it needs no secrets")
	}
}

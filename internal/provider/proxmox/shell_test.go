package proxmox

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/homelab-dev/homelab/internal/spec"
)

// sshServer is a minimal SSH server: it accepts one client key and
// answers each exec request with "cmd=<command>;stdin=<stdin>".
func sshServer(t *testing.T, clientKey ssh.PublicKey) (addr string, hostKey ssh.PublicKey) {
	t.Helper()
	_, hpriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(hpriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(clientKey.Marshal()) {
			return nil, nil
		}
		return nil, io.EOF
	}}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					c.Close()
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					ch, rq, err := nc.Accept()
					if err != nil {
						continue
					}
					go func() {
						for r := range rq {
							if r.Type != "exec" {
								r.Reply(false, nil)
								continue
							}
							n := binary.BigEndian.Uint32(r.Payload[:4])
							cmd := string(r.Payload[4 : 4+n])
							r.Reply(true, nil)
							in, _ := io.ReadAll(ch)
							io.WriteString(ch, "cmd="+cmd+";stdin="+string(in))
							status := uint32(0)
							if strings.Contains(cmd, "fail") {
								io.WriteString(ch.Stderr(), "it failed\n")
								status = 3
							}
							ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
							ch.Close()
							return
						}
					}()
				}
			}(c)
		}
	}()
	return ln.Addr().String(), signer.PublicKey()
}

func TestSSHShell(t *testing.T) {
	dir := t.TempDir()
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(cpriv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	csigner, _ := ssh.NewSignerFromKey(cpriv)
	addr, hostKey := sshServer(t, csigner.PublicKey())
	kh := filepath.Join(dir, "known_hosts")
	ctx := context.Background()

	// Unknown host: refused.
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = DialSSH(ctx, spec.SSH{Address: addr, KeyFile: keyFile, KnownHosts: kh}, "")
	if err == nil || !strings.Contains(err.Error(), "host key not known or changed") || !strings.Contains(hintOf(err), "ssh-keyscan") {
		t.Fatalf("DialSSH to an unknown host = %v (hint %q), want a refusal with a hint", err, hintOf(err))
	}

	// Known host: commands run, arguments quoted, stdin passed.
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey)
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh, err := DialSSH(ctx, spec.SSH{Address: addr, KeyFile: keyFile, KnownHosts: kh}, "")
	if err != nil {
		t.Fatalf("DialSSH: %v", err)
	}
	defer sh.Close()
	out, err := sh.Run(ctx, []byte("data"), "install", "-m", "0600", "/dev/stdin", "/tmp/it's here")
	if err != nil {
		t.Fatal(err)
	}
	want := `cmd='install' '-m' '0600' '/dev/stdin' '/tmp/it'\''s here';stdin=data`
	if string(out) != want {
		t.Errorf("Run output = %q, want %q", out, want)
	}
	_, err = sh.Run(ctx, nil, "fail")
	if err == nil || !strings.Contains(err.Error(), "fail on the host: Process exited with status 3: it failed") {
		t.Errorf("Run(fail) error = %v", err)
	}
}

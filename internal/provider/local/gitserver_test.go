package local

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/homelab-dev/homelab/internal/render"
	"github.com/homelab-dev/homelab/internal/spec"
)

// testSSHKey makes an ed25519 key: OpenSSH PEM and authorized_keys line.
func testSSHKey(t *testing.T, comment string) ([]byte, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return pem.EncodeToMemory(b), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

// TestGitServerDaemon: with the manager's git files rendered, the
// manager's namespace runs homelab gitserver on its admin address, port
// 22, with the host key and authorized keys in its config folder.
func TestGitServerDaemon(t *testing.T) {
	lab := referenceLab(t, "lab")
	topo, err := TopologyOf(lab)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _ := testSSHKey(t, "host")
	_, pushPub := testSSHKey(t, "push")
	_, deployPub := testSSHKey(t, "deploy")
	arts := []render.Artifact{
		{Path: "lb/lb.yaml", Data: []byte("lb")},
		{Path: "wireguard/server.conf", Data: []byte("wg"), Secret: true},
	}
	auth, err := render.GitAuthorizedKeys(render.GitRepoPath(lab), pushPub, deployPub)
	if err != nil {
		t.Fatal(err)
	}
	git := []render.Artifact{
		{Path: "git/manager/authorized_keys", Data: []byte(auth)},
		{Path: "git/manager/ssh_host_ed25519_key", Data: hostKey, Secret: true},
	}
	p := &Provider{lab: lab, exe: "/usr/bin/homelab", l: layout("/state/local")}

	mgr, ok := topo.Guest(spec.MachineManager, 0)
	if !ok {
		t.Fatal("the reference lab has no manager")
	}
	admin, _ := mgr.Machine.Address(spec.RoleAdmin)

	t.Run("with the git files", func(t *testing.T) {
		ds, err := p.daemons(lab, topo, append(slices.Clone(arts), git...))
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ds, func(d procDef) bool { return d.spec.Name == mgr.NS })
		if i < 0 {
			t.Fatalf("no daemon in the manager's namespace %s", mgr.NS)
		}
		d := ds[i]
		cfg := filepath.Join("/state/local/config", mgr.NS)
		want := []string{"/usr/bin/homelab", "gitserver", "run",
			"--dir", cfg + "/git",
			"--listen", admin.String() + ":22",
			"--host-key", cfg + "/ssh_host_ed25519_key",
			"--authorized", cfg + "/authorized_keys",
			"--repo", "lab"}
		if !slices.Equal(d.spec.Argv, want) {
			t.Errorf("argv =\n%q\nwant\n%q", d.spec.Argv, want)
		}
		if d.spec.NS != mgr.NS || !slices.Equal(d.spec.TCP, []uint16{22}) {
			t.Errorf("spec = %+v, want namespace %s, tcp 22", d.spec, mgr.NS)
		}
		if string(d.files["ssh_host_ed25519_key"].Data) != string(hostKey) || string(d.files["authorized_keys"].Data) != auth || len(d.files) != 2 {
			t.Errorf("config files = %v", d.files)
		}
		if d.spec.Hash == "" {
			t.Errorf("no hash: a new key would not restart the server")
		}
		// A new key restarts the server.
		_, other := testSSHKey(t, "push2")
		auth2, _ := render.GitAuthorizedKeys(render.GitRepoPath(lab), other, deployPub)
		ds2, err := p.daemons(lab, topo, append(slices.Clone(arts), render.Artifact{Path: "git/manager/authorized_keys", Data: []byte(auth2)}, git[1]))
		if err != nil {
			t.Fatal(err)
		}
		if j := slices.IndexFunc(ds2, func(d procDef) bool { return d.spec.Name == mgr.NS }); ds2[j].spec.Hash == d.spec.Hash {
			t.Errorf("the hash did not change with the authorized keys")
		}
	})
	t.Run("without them (gitops.repository elsewhere)", func(t *testing.T) {
		ds, err := p.daemons(lab, topo, arts)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(ds, func(d procDef) bool { return d.spec.Name == mgr.NS }) {
			t.Errorf("a daemon runs in the manager's namespace without the git files")
		}
	})
	t.Run("half of them", func(t *testing.T) {
		if _, err := p.daemons(lab, topo, append(slices.Clone(arts), git[0])); err == nil || !strings.Contains(err.Error(), "only one of") {
			t.Errorf("daemons = %v, want an error about the missing file", err)
		}
	})
}

package render

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// testGitServer reads the test-only keys of testdata/TEST-ONLY-git-keys.yaml.
func testGitServer(t *testing.T) GitServer {
	t.Helper()
	data, err := os.ReadFile("testdata/TEST-ONLY-git-keys.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k map[string]string
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	return GitServer{HostKey: []byte(k["host-private"]), HostPublic: k["host-public"], PushPublic: k["push-public"], DeployPublic: k["deploy-public"]}
}

// TestGitServerGolden: with a Git server, the manager's user-data and
// the local git server's files against their golden files.
func TestGitServerGolden(t *testing.T) {
	g := testGitServer(t)
	arts, err := Render(testLab(t), testBundle(t), WithGitServer(g))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("testdata", "golden-git")
	want := map[string]bool{
		"cloud-init/manager/user-data": true, "git/manager/authorized_keys": false, "git/manager/ssh_host_ed25519_key": true,
	}
	seen := 0
	for _, a := range arts {
		secret, ok := want[a.Path]
		if !ok {
			continue
		}
		seen++
		if a.Secret != secret {
			t.Errorf("%s: Secret = %v, want %v", a.Path, a.Secret, secret)
		}
		p := filepath.Join(root, filepath.FromSlash(a.Path))
		if *update {
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, a.Data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		golden, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("reading golden file (run go test -update to create it): %v", err)
		}
		if !bytes.Equal(a.Data, golden) {
			t.Errorf("%s differs from %s (run go test -update and review the diff)", a.Path, p)
		}
		if !a.Secret && bytes.Contains(a.Data, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key but is not flagged Secret", a.Path)
		}
	}
	if seen != len(want) {
		t.Errorf("Render made %d of the %d git server artifacts", seen, len(want))
	}
	// Nothing else carries the host key.
	for _, a := range arts {
		if !a.Secret && bytes.Contains(a.Data, bytes.TrimSpace(g.HostKey)[40:80]) {
			t.Errorf("%s holds the host key but is not flagged Secret", a.Path)
		}
	}
}

// TestGitServerUserData decodes the user-data and checks what cloud-init
// will do with it.
func TestGitServerUserData(t *testing.T) {
	g := testGitServer(t)
	lab := testLab(t)
	arts, err := Render(lab, testBundle(t), WithGitServer(g))
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, a := range arts {
		if a.Path == "cloud-init/manager/user-data" {
			data = a.Data
		}
	}
	if !strings.HasPrefix(string(data), "#cloud-config\n") {
		t.Fatalf("user-data does not start with #cloud-config")
	}
	var ud struct {
		SSHDeleteKeys  bool              `yaml:"ssh_deletekeys"`
		SSHGenKeyTypes []string          `yaml:"ssh_genkeytypes"`
		SSHKeys        map[string]string `yaml:"ssh_keys"`
		Users          []struct {
			Name, Shell, Homedir string
		} `yaml:"users"`
		WriteFiles []struct{ Path, Permissions, Content string } `yaml:"write_files"`
		RunCmd     [][]string                                    `yaml:"runcmd"`
	}
	if err := yaml.Unmarshal(data, &ud); err != nil {
		t.Fatalf("user-data is not YAML: %v", err)
	}
	if ud.SSHKeys["ed25519_private"] != string(g.HostKey) || ud.SSHKeys["ed25519_public"] != g.HostPublic {
		t.Errorf("ssh_keys = %v, want the git host key", ud.SSHKeys)
	}
	if !ud.SSHDeleteKeys || ud.SSHGenKeyTypes == nil || len(ud.SSHGenKeyTypes) != 0 {
		t.Errorf("ssh_deletekeys %v, ssh_genkeytypes %v: want only homelab's host key", ud.SSHDeleteKeys, ud.SSHGenKeyTypes)
	}
	var gitUser bool
	for _, u := range ud.Users {
		if u.Name == "git" {
			gitUser = u.Shell == "/usr/bin/git-shell" && u.Homedir == "/srv/git"
		}
	}
	if !gitUser {
		t.Errorf("users = %+v, want git with git-shell in /srv/git", ud.Users)
	}
	files := map[string]string{}
	for _, f := range ud.WriteFiles {
		files[f.Path] = f.Content
	}
	auth, _ := GitAuthorizedKeys("/srv/git/"+lab.Name+".git", g.PushPublic, g.DeployPublic)
	if files["/usr/local/share/homelab/git-authorized_keys"] != auth {
		t.Errorf("authorized_keys in user-data = %q, want %q", files["/usr/local/share/homelab/git-authorized_keys"], auth)
	}
	if !strings.Contains(files["/usr/local/sbin/homelab-git-setup"], "git init --quiet --bare --initial-branch=main \"$repo\"") ||
		!strings.Contains(files["/usr/local/sbin/homelab-git-setup"], "repo=/srv/git/"+lab.Name+".git\n") {
		t.Errorf("setup script:\n%s", files["/usr/local/sbin/homelab-git-setup"])
	}
	if !strings.Contains(files["/usr/local/sbin/homelab-install-tools"], "fetch talosctl") {
		t.Errorf("the install script is missing")
	}
	var setupRuns bool
	for _, c := range ud.RunCmd {
		setupRuns = setupRuns || (len(c) == 1 && c[0] == "/usr/local/sbin/homelab-git-setup")
	}
	if !setupRuns {
		t.Errorf("runcmd %v does not run homelab-git-setup", ud.RunCmd)
	}
}

func TestGitServerErrors(t *testing.T) {
	good := testGitServer(t)
	otherPub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK97c8WpeBiytrvhCJAtiPr0LbKxojLX8eDRcpGwtri0 other"
	for _, tc := range []struct {
		name string
		edit func(*GitServer)
		want string
	}{
		{"host halves differ", func(g *GitServer) { g.HostPublic = otherPub }, "do not match"},
		{"host key not a key", func(g *GitServer) { g.HostKey = []byte("nope") }, "not an OpenSSH private key"},
		{"host public not a key", func(g *GitServer) { g.HostPublic = "nope" }, "not one ssh-ed25519 key"},
		{"push key two lines", func(g *GitServer) { g.PushPublic += "\n" + g.DeployPublic }, "not one public key line"},
		{"deploy key empty", func(g *GitServer) { g.DeployPublic = "" }, "not one public key line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := good
			tc.edit(&g)
			_, err := Render(testLab(t), testBundle(t), WithGitServer(g))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Render = %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE") {
				t.Errorf("error quotes the private key: %v", err)
			}
		})
	}
}

func TestGitAuthorizedKeys(t *testing.T) {
	g := testGitServer(t)
	got, err := GitAuthorizedKeys("/srv/git/lab.git", g.PushPublic, g.DeployPublic)
	if err != nil {
		t.Fatal(err)
	}
	want := "restrict " + g.PushPublic + "\n" + `restrict,command="git-upload-pack '/srv/git/lab.git'" ` + g.DeployPublic + "\n"
	if got != want {
		t.Errorf("GitAuthorizedKeys =\n%s\nwant\n%s", got, want)
	}
	for _, p := range []string{"srv/git/lab.git", "/srv/git/l'ab.git", "/srv/git/../lab.git", "/srv/git/lab", "/srv//lab.git", "/.git"} {
		if _, err := GitAuthorizedKeys(p, g.PushPublic, g.DeployPublic); err == nil {
			t.Errorf("GitAuthorizedKeys(%q) = nil error", p)
		}
	}
}

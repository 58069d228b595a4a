package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func homelab(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestInitThenValidate(t *testing.T) {
	for _, provider := range []string{"local", "proxmox"} {
		t.Run(provider, func(t *testing.T) {
			lab := filepath.Join(t.TempDir(), "lab.yaml")
			code, out, errs := homelab(t, "init", "--provider", provider, "-f", lab)
			if code != 0 {
				t.Fatalf("init: exit %d\n%s", code, errs)
			}
			if !strings.Contains(out, "wrote "+lab) || !strings.Contains(out, "available to guests") {
				t.Errorf("init output lacks the file name or the budget:\n%s", out)
			}
			data, err := os.ReadFile(lab)
			if err != nil || !strings.Contains(string(data), "provider: "+provider) {
				t.Fatalf("init wrote %q, %v", data, err)
			}

			code, _, errs = homelab(t, "init", "-f", lab)
			if code != 1 || !strings.Contains(errs, "already exists") || !strings.Contains(errs, "--force") {
				t.Errorf("init over an existing file: exit %d, stderr %q; want 1 and a hint about --force", code, errs)
			}
			if code, _, errs = homelab(t, "init", "--force", "--provider", provider, "-f", lab); code != 0 {
				t.Errorf("init --force: exit %d\n%s", code, errs)
			}

			code, out, errs = homelab(t, "validate", "--strict", "-f", lab)
			if code != 0 {
				t.Fatalf("validate --strict of the reference: exit %d\n%s", code, errs)
			}
			if !strings.Contains(out, "total guests") || !strings.Contains(out, "is valid") {
				t.Errorf("validate output lacks the budget or the verdict:\n%s", out)
			}
		})
	}
}

func TestValidateReportsEverything(t *testing.T) {
	dir := t.TempDir()
	lab := filepath.Join(dir, "lab.yaml")
	if code, _, errs := homelab(t, "init", "-f", lab); code != 0 {
		t.Fatal(errs)
	}
	data, _ := os.ReadFile(lab)
	bad := strings.Replace(string(data), "    memory: 4GiB\n", "    memory: 512MiB\n", 1)
	bad = strings.Replace(bad, "name: lab\n", "name: lab\nfrobnicate: yes\n", 1)
	bad = strings.Replace(bad, "    - name: openproject", "    - name: wordpress", 1)
	if err := os.WriteFile(lab, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := homelab(t, "validate", "-f", lab)
	if code != 1 {
		t.Errorf("validate of a bad lab: exit %d, want 1", code)
	}
	for _, want := range []string{
		lab + ":",
		`frobnicate: unknown key "frobnicate"`,
		"cluster.workers.memory: 512MiB is below Talos's minimum of 1GiB for a worker",
		"hint: give each worker at least 1GiB",
		`warning: gitops.apps[1].name: unknown app "wordpress"`,
		"is not valid: 2 errors",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("validate stderr lacks %q:\n%s", want, errs)
		}
	}
	if !strings.Contains(out, "total guests") {
		t.Errorf("validate prints no budget for a lab with errors:\n%s", out)
	}
}

func TestValidateStrictWarnings(t *testing.T) {
	lab := filepath.Join(t.TempDir(), "lab.yaml")
	if code, _, errs := homelab(t, "init", "-f", lab); code != 0 {
		t.Fatal(errs)
	}
	data, _ := os.ReadFile(lab)
	warn := strings.Replace(string(data), "    - name: openproject", "    - name: wordpress", 1)
	if err := os.WriteFile(lab, []byte(warn), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := homelab(t, "validate", "-f", lab); code != 0 || !strings.Contains(out, "valid (1 warning)") {
		t.Errorf("validate with a warning: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := homelab(t, "validate", "--strict", "-f", lab); code != 1 || !strings.Contains(errs, "1 warning (--strict)") {
		t.Errorf("validate --strict with a warning: exit %d, want 1\n%s", code, errs)
	}
}

func TestValidateMissingFile(t *testing.T) {
	code, _, errs := homelab(t, "validate", "-f", filepath.Join(t.TempDir(), "nope.yaml"))
	if code != 1 || !strings.Contains(errs, "hint: write the reference lab with homelab init") {
		t.Errorf("validate of a missing file: exit %d\n%s", code, errs)
	}
}

func TestSchemaCommand(t *testing.T) {
	code, out, errs := homelab(t, "schema")
	if code != 0 || !strings.HasPrefix(out, "{") || !strings.Contains(out, `"loadBalancer"`) {
		t.Errorf("schema: exit %d\n%s\n%s", code, out[:min(len(out), 200)], errs)
	}
}

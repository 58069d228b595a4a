package spec

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDiagnosticError(t *testing.T) {
	tests := []struct {
		d    Diagnostic
		want string
	}{
		{Diagnostic{File: "lab.yaml", Line: 12, Col: 5, Path: "cluster.workers.memory", Msg: "512MiB is below Talos's minimum of 1GiB for a worker", Hint: "give each worker at least 1GiB"},
			"lab.yaml:12:5: cluster.workers.memory: 512MiB is below Talos's minimum of 1GiB for a worker\n  hint: give each worker at least 1GiB"},
		{Diagnostic{Severity: Warning, File: "lab.yaml", Line: 3, Col: 1, Path: "x", Msg: "m"}, "lab.yaml:3:1: warning: x: m"},
		{Diagnostic{File: "lab.yaml", Msg: "the file is empty"}, "lab.yaml: the file is empty"},
	}
	for _, tt := range tests {
		if got := tt.d.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestDiagnosticsAndStrict(t *testing.T) {
	a := Diagnostic{File: "f", Line: 1, Col: 1, Msg: "a"}
	b := Diagnostic{File: "f", Line: 2, Col: 1, Msg: "b"}
	err := fmt.Errorf("loading: %w", errors.Join(a, b))
	if got := Diagnostics(err); len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("Diagnostics(wrapped join) = %v", got)
	}
	if Diagnostics(errors.New("other")) != nil {
		t.Errorf("Diagnostics(plain error) is not nil")
	}
	if Strict(nil) != nil {
		t.Errorf("Strict(no warnings) != nil")
	}
	w := Diagnostic{Severity: Warning, File: "f", Line: 3, Col: 1, Msg: "w"}
	ds := Diagnostics(Strict([]Diagnostic{w}))
	if len(ds) != 1 || ds[0].Severity != Error || ds[0].Msg != "w" {
		t.Errorf("Strict(warning) = %v, want it as an error", ds)
	}
}

func TestParent(t *testing.T) {
	for in, want := range map[string]string{
		"a.b[2].c": "a.b[2]", "a.b[2]": "a.b", "a.b": "a", "a": "", "": "",
	} {
		if got := parent(in); got != want {
			t.Errorf("parent(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAllProblemsAtOnce checks that one run reports problems of every
// stage: decoding, defaults and validation.
func TestAllProblemsAtOnce(t *testing.T) {
	src := strings.Replace(minimal, "name: lab\n", "name: lab\nbogus: 1\n", 1)
	src = strings.Replace(src, "memory: 16GiB", "memory: sixteen", 1)
	src = strings.Replace(src, "workers: {count: 2, memory: 2GiB}", "workers: {count: 2, memory: 512MiB}", 1)
	src = strings.Replace(src, "kubernetesVersion: v1.36.3", "kubernetesVersion: v1.99.0", 1)
	_, _, err := Parse("lab.yaml", []byte(src))
	ds := Diagnostics(err)
	var paths []string
	for _, d := range ds {
		paths = append(paths, d.Path)
	}
	want := []string{"bogus", "host.memory", "cluster.kubernetesVersion", "cluster.workers.memory"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Errorf("diagnostic paths = %v, want %v\n%v", paths, want, err)
	}
}

// TestNoSecretInMessages: a secret written inline is rejected without its
// value ever appearing in the message.
func TestNoSecretInMessages(t *testing.T) {
	const secret = "5f0e2c1a-9d1b-4c3e-8f7a-0123456789ab"
	src := strings.Replace(minimal, "host: {memory: 16GiB, disk: 500GiB, cores: 4}",
		"host:\n  provider: proxmox\n  memory: 16GiB\n  disk: 500GiB\n  cores: 4\n  proxmox:\n    endpoint: https://pve:8006\n    node: pve\n    storage: local-lvm\n    tokenID: root@pam!hl\n    token: "+secret+"\n", 1)
	_, warns, err := Parse("lab.yaml", []byte(src))
	if err == nil {
		t.Fatal("inline token accepted")
	}
	all := err.Error()
	for _, w := range warns {
		all += w.Error()
	}
	if strings.Contains(all, secret) {
		t.Errorf("the secret appears in the diagnostics:\n%s", all)
	}
	if !strings.Contains(all, "tokenEnv") {
		t.Errorf("no hint toward tokenEnv:\n%s", all)
	}
}

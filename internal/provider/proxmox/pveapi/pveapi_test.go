package pveapi

import (
	"strings"
	"testing"
)

func TestErrorPermission(t *testing.T) {
	tests := []struct {
		status     int
		msg        string
		path, priv string
		ok         bool
	}{
		{403, "Permission check failed (/vms/100, VM.Allocate)", "/vms/100", "VM.Allocate", true},
		{403, "Permission check failed (/storage/local, Datastore.AllocateTemplate)", "/storage/local", "Datastore.AllocateTemplate", true},
		{403, "Permission check failed", "", "", false},
		{500, "Permission check failed (/vms/100, VM.Allocate)", "", "", false},
	}
	for _, tt := range tests {
		e := &Error{Status: tt.status, Message: tt.msg}
		path, priv, ok := e.Permission()
		if path != tt.path || priv != tt.priv || ok != tt.ok {
			t.Errorf("Permission(%d %q) = %q, %q, %v, want %q, %q, %v", tt.status, tt.msg, path, priv, ok, tt.path, tt.priv, tt.ok)
		}
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Method: "POST", Path: "/nodes/pve/qemu", Status: 400, Message: "Parameter verification failed.",
		Params: map[string]string{"vmid": "invalid format\n", "cores": "value must be at least 1"}}
	want := "POST /nodes/pve/qemu: 400 Parameter verification failed. (cores: value must be at least 1; vmid: invalid format)"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
}

func TestSeg(t *testing.T) {
	tests := map[string]string{
		"UPID:pve:00010006:00185E7C:6B04A614:srvreload:networking:root@pam!tok:": "UPID:pve:00010006:00185E7C:6B04A614:srvreload:networking:root@pam!tok:",
		"local:import/debian.qcow2": "local:import%2Fdebian.qcow2",
		"10.0.0.0/24":               "10.0.0.0%2F24",
		"a b":                       "a%20b",
	}
	for in, want := range tests {
		if got := Seg(in); got != want {
			t.Errorf("Seg(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	full := strings.Repeat("ab", 32)
	want := strings.TrimSuffix(strings.Repeat("AB:", 32), ":")
	for _, in := range []string{full, strings.ToUpper(full), want, strings.ReplaceAll(want, ":", "-"), " " + want + " "} {
		got, err := NormalizeFingerprint(in)
		if err != nil || got != want {
			t.Errorf("NormalizeFingerprint(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "AB:CD", strings.Repeat("zz", 32), strings.Repeat("ab", 20)} {
		if _, err := NormalizeFingerprint(in); err == nil {
			t.Errorf("NormalizeFingerprint(%q) succeeded, want an error", in)
		}
	}
}

func TestTaskErrorType(t *testing.T) {
	e := &TaskError{UPID: "UPID:pve:0001:0002:0003:qmcreate:200:root@pam:", ExitStatus: "boom", Log: []string{"a", "TASK ERROR: boom"}}
	want := "task qmcreate 200 failed: boom\n    task log (last lines):\n    | a\n    | TASK ERROR: boom"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	if NodeOfUPID(e.UPID) != "pve" || NodeOfUPID("nope") != "" {
		t.Errorf("NodeOfUPID wrong")
	}
}

func FuzzPermission(f *testing.F) {
	f.Add("Permission check failed (/vms/100, VM.Allocate)")
	f.Add("Permission check failed (, )")
	f.Fuzz(func(t *testing.T, msg string) {
		e := &Error{Status: 403, Message: msg}
		path, priv, ok := e.Permission()
		if ok && (strings.Contains(path, ",") || strings.Contains(priv, ")")) {
			t.Errorf("Permission(%q) = %q, %q", msg, path, priv)
		}
		_ = e.Error()
	})
}

func FuzzNormalizeFingerprint(f *testing.F) {
	f.Add(strings.Repeat("ab:", 31) + "ab")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeFingerprint(s)
		if err != nil {
			return
		}
		if len(got) != 95 {
			t.Errorf("NormalizeFingerprint(%q) = %q, not 32 bytes", s, got)
		}
		again, err := NormalizeFingerprint(got)
		if err != nil || again != got {
			t.Errorf("not idempotent: %q -> %q, %v", got, again, err)
		}
	})
}

func TestTemporary(t *testing.T) {
	tests := []struct {
		status   int
		msg      string
		temp, nf bool
	}{
		{500, "got timeout", true, false},
		{503, "service unavailable", true, false},
		{500, "Configuration file 'nodes/pve/qemu-server/200.conf' does not exist", false, true},
		{500, "unable to create VM 200 - VM 200 already exists on node 'pve'", false, false},
		{404, "not found", false, true},
		{400, "Parameter verification failed.", false, false},
	}
	for _, tt := range tests {
		e := &Error{Status: tt.status, Message: tt.msg}
		if e.Temporary() != tt.temp || IsNotFound(e) != tt.nf {
			t.Errorf("%d %q: Temporary() = %v, IsNotFound = %v; want %v, %v", tt.status, tt.msg, e.Temporary(), IsNotFound(e), tt.temp, tt.nf)
		}
	}
}

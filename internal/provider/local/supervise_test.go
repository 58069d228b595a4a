package local

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/provider/local/ns"
)

// TestSupervise runs the supervisor in-process over a namespace with a
// sleep(1) daemon: it starts it inside the namespace, restarts it after a
// kill, stops it when its spec goes, and stops everything on shutdown.
func TestSupervise(t *testing.T) {
	if err := CheckPrivileges(); err != nil {
		t.Skip("needs root (network namespaces): run as root, e.g. sudo go test ./internal/provider/local/")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	nsName := "hlsup-" + filepath.Base(t.TempDir())
	if len(nsName) > 40 {
		nsName = nsName[:40]
	}
	if err := ns.Create(nsName); err != nil {
		t.Fatal(err)
	}
	defer ns.Delete(nsName)
	state := t.TempDir()
	l := layout(filepath.Join(state, "local"))
	if err := l.mkdirs(); err != nil {
		t.Fatal(err)
	}
	sp := procSpec{Name: "d1", NS: nsName, Argv: []string{sleep, "300"}, Hash: "h1"}
	b, _ := jsonMarshal(sp)
	if err := os.WriteFile(l.spec("d1"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, state) }()
	defer func() {
		cancel()
		<-done
	}()

	p := &Provider{l: l, exe: "/nonexistent"}
	running := func() procState {
		st, _ := p.procState(sp)
		return st
	}
	if !waitFor(ctx, 5*time.Second, func() bool { return running().PID > 0 }) {
		t.Fatalf("the daemon did not start: %+v", running())
	}
	first := running()
	if !inNamespace(first.PID, nsName) {
		t.Errorf("pid %d does not run in %s", first.PID, nsName)
	}
	if got := ns.PIDs(nsName); len(got) != 1 || got[0] != first.PID {
		t.Errorf("ns.PIDs(%s) = %v, want [%d]", nsName, got, first.PID)
	}

	_ = syscall.Kill(first.PID, syscall.SIGKILL)
	if !waitFor(ctx, 5*time.Second, func() bool { st := running(); return st.PID > 0 && st.PID != first.PID }) {
		t.Fatalf("the daemon was not restarted: %+v", running())
	}
	if st := running(); st.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", st.Restarts)
	}

	// A second supervisor of the same lab leaves at once.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if err := Supervise(ctx2, state); err != nil || ctx2.Err() != nil {
		t.Errorf("a second supervisor: %v (ctx %v), want an immediate nil", err, ctx2.Err())
	}

	second := running().PID
	os.Remove(l.spec("d1"))
	_ = syscall.Kill(supervisorPIDOf(t, l), syscall.SIGHUP)
	if !waitFor(ctx, 5*time.Second, func() bool { return exited(second) }) {
		t.Errorf("the daemon %d still runs after its spec was removed", second)
	}

	if err := os.WriteFile(l.spec("d1"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(supervisorPIDOf(t, l), syscall.SIGHUP)
	if !waitFor(ctx, 5*time.Second, func() bool { return running().PID > 0 }) {
		t.Fatalf("the daemon did not start again")
	}
	third := running().PID
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Supervise: %v", err)
	}
	done <- nil // for the deferred receive
	if !exited(third) {
		t.Errorf("the daemon %d outlived the supervisor", third)
	}
	if _, err := os.Stat(l.supervisorPID()); err == nil {
		t.Errorf("the supervisor left its pid file")
	}
}

func supervisorPIDOf(t *testing.T, l layout) int {
	t.Helper()
	var pid int
	b, err := os.ReadFile(l.supervisorPID())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b {
		if c >= '0' && c <= '9' {
			pid = pid*10 + int(c-'0')
		}
	}
	return pid
}

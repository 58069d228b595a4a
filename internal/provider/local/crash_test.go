package local_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/verify"
)

// homelab runs the CLI as a subprocess against the test lab.
func (tl *testLab) homelab(args ...string) *exec.Cmd {
	cmd := exec.Command(tl.exe, append(args, "-f", filepath.Join(tl.dir, "lab.yaml"))...)
	cmd.Env = append(os.Environ(), secrets.IdentityEnv+"="+filepath.Join(tl.dir, "identity.txt"))
	return cmd
}

// TestKilledApplyConverges kills "homelab apply" with SIGKILL at several
// points of its run; each following apply picks up from what exists, the
// last one completes, a further one has nothing to do, the policy holds,
// and destroy leaves nothing behind.
func TestKilledApplyConverges(t *testing.T) {
	tl := newTestLab(t)
	for _, after := range []time.Duration{15 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond} {
		cmd := tl.homelab("apply")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(after)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		t.Logf("apply killed after %s (%v); it had printed %d lines", after, err, strings.Count(out.String(), "\n"))
	}
	out, err := tl.homelab("apply").CombinedOutput()
	if err != nil {
		t.Fatalf("apply after the kills: %v\n%s", err, out)
	}
	out, err = tl.homelab("apply").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No changes") {
		t.Fatalf("second apply: %v, want no changes:\n%s", err, out)
	}
	if rep, err := verify.Run(context.Background(), tl.lab, verify.Options{}); err != nil {
		var b strings.Builder
		if rep != nil {
			rep.Print(&b)
		}
		t.Errorf("verify after the kills: %v\n%s", err, b.String())
	}
	// Kill destroy too, then finish it.
	cmd := tl.homelab("destroy", "--yes")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(40 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	out, err = tl.homelab("destroy", "--yes").CombinedOutput()
	if err != nil {
		t.Fatalf("destroy: %v\n%s", err, out)
	}
	if left := tl.leftovers(t); len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "\n  "))
	}
}

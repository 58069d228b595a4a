package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
	"github.com/homelab-dev/homelab/internal/tunnel"
)

// buildHomelab builds ./cmd/homelab: the local provider's supervisor and
// daemons (the VPN, the LB, the Talos stand-ins) are its subcommands, so
// apply runs as that binary, not as this test.
func buildHomelab(t *testing.T) string {
	t.Helper()
	if exe := os.Getenv("HOMELAB_TEST_BINARY"); exe != "" {
		return exe
	}
	exe := filepath.Join(t.TempDir(), "homelab")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", exe, "./cmd/homelab")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building homelab: %v\n%s", err, out)
	}
	return exe
}

// TestApplyBootstrapsLocalLab builds the reference lab with the local
// provider, then checks apply's cluster phase against its Talos
// stand-ins, reached from this machine's own namespace through the
// in-process WireGuard tunnel as homelab's operator peer: machine configs
// applied, etcd bootstrapped once (not again on a second apply), the
// kubeconfig stored encrypted, the health report printed; and a node that
// never answers ends in a bounded error naming it.
func TestApplyBootstrapsLocalLab(t *testing.T) {
	if err := local.CheckPrivileges(); err != nil {
		t.Skip("needs root (network namespaces, nftables, processes): run as root, e.g. sudo go test -run TestApplyBootstrapsLocalLab ./internal/cli/")
	}
	exe := buildHomelab(t)
	dir := t.TempDir()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "c" + hex.EncodeToString(b)
	yaml := strings.Replace(string(spec.Reference(spec.ProviderLocal)), "\nname: lab\n", "\nname: "+name+"\n", 1)
	file := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	identity := filepath.Join(t.TempDir(), "identity.txt")
	t.Setenv(secrets.IdentityEnv, identity)
	stateDir := filepath.Join(dir, secrets.StateDirName)

	homelab := func(args ...string) (string, string, error) {
		cmd := exec.Command(exe, append(args, "-f", file)...)
		cmd.Env = append(os.Environ(), secrets.IdentityEnv+"="+identity)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	t.Cleanup(func() {
		if out, errs, err := homelab("destroy", "--yes"); err != nil {
			t.Errorf("destroy: %v\n%s%s", err, out, errs)
		}
	})

	// 1. The first apply: every phase.
	t0 := time.Now()
	out, errs, err := homelab("apply", "--node-timeout", "90s", "--health-timeout", "90s")
	if err != nil {
		t.Fatalf("first apply: %v\nstdout:\n%s\nstderr:\n%s", err, out, errs)
	}
	t.Logf("first apply took %s:\n%s", time.Since(t0).Round(time.Millisecond), out)
	cp := name + "-cp-1"
	for _, want := range []string{
		"== phase 1/3 infra", "== phase infra done in",
		"== phase 2/3 cluster", "in-process WireGuard tunnel as peer " + OperatorPeer, "(UDP from the " + name + "-internet namespace",
		"waiting for the Talos API of " + cp + ", " + name + "-worker-1, " + name + "-worker-2",
		cp + ": machine config applied", name + "-worker-2: configured",
		cp + ": etcd bootstrapped", "etcd: bootstrapped on " + cp + " in this run",
		"cluster health (the nodes are homelab stand-ins", "homelab stand-ins (local provider), not Talos",
		"kubeconfig and talosconfig: encrypted in " + stateDir,
		"== phase cluster done in", "== phase 3/3 gitops",
		"gitops: pushed commit ", "to ssh://git@10.10.1.5/srv/git/" + name + ".git",
		"Flux is NOT installed: the cluster is made of homelab stand-ins",
		"apply: all phases done in",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first apply's output lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^  ok +kubernetes /readyz`).MatchString(out) {
		t.Errorf("the health report has no passing /readyz check:\n%s", out)
	}

	// The kubeconfig is on disk only encrypted, and decrypts to the
	// kubeconfig the stand-in issued for the lab's cluster.
	raw, err := os.ReadFile(filepath.Join(stateDir, bootstrap.FileKubeconfig+".age"))
	if err != nil {
		t.Fatalf("no encrypted kubeconfig in the state folder: %v", err)
	}
	for _, plain := range []string{"apiVersion", "client-key-data", "certificate-authority-data", "BEGIN"} {
		if bytes.Contains(raw, []byte(plain)) {
			t.Errorf("the stored kubeconfig holds %q in clear", plain)
		}
	}
	if _, err := os.Stat(filepath.Join(stateDir, bootstrap.FileKubeconfig)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a plaintext kubeconfig exists in the state folder (stat: %v)", err)
	}
	store, err := secrets.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	kcData, err := store.GetFile(bootstrap.FileKubeconfig)
	if err != nil {
		t.Fatalf("decrypting the kubeconfig: %v", err)
	}
	kc, err := bootstrap.ParseKubeconfig(kcData)
	if err != nil {
		t.Fatalf("the stored kubeconfig does not parse: %v", err)
	}
	if kc.Server != "https://10.10.1.10:6443" {
		t.Errorf("kubeconfig server = %q, want the control plane's API on the admin network", kc.Server)
	}
	if strings.Contains(out+errs, "client-key-data") {
		t.Error("apply printed the kubeconfig's key")
	}

	// The stand-in recorded the bootstrap (its STATE partition).
	if st := standinState(t, stateDir, cp); !st.Configured || !st.Bootstrapped {
		t.Errorf("stand-in %s state = %+v, want configured and bootstrapped", cp, st)
	}

	// 2. A second apply changes nothing and does not bootstrap again.
	out, errs, err = homelab("apply", "--until", "cluster", "--node-timeout", "60s", "--health-timeout", "60s")
	if err != nil {
		t.Fatalf("second apply: %v\nstdout:\n%s\nstderr:\n%s", err, out, errs)
	}
	for _, want := range []string{
		"No changes: the lab matches the spec", cp + ": already configured", name + "-worker-1: already configured",
		cp + ": etcd already bootstrapped", "etcd: bootstrapped already on " + cp + " (not bootstrapped again)",
		"Stopped after the cluster phase",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("second apply's output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"machine config applied", "in this run", "== phase 3/3"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("second apply's output has %q:\n%s", unwanted, out)
		}
	}
	// The stand-in's own log: one bootstrap over both applies.
	cpLog, err := os.ReadFile(filepath.Join(stateDir, "local", "logs", cp+".log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(cpLog), `msg="homelab stand-in bootstrapped"`); n != 1 {
		t.Errorf("stand-in %s logged %d bootstraps over two applies, want 1:\n%s", cp, n, cpLog)
	}

	// 3. In this process (race detector on): a node that never answers.
	// SIGSTOP keeps its stand-in alive for the supervisor but silent on
	// the network, as a hung VM would be.
	stalled := name + "-worker-2"
	pid := standinPID(t, stateDir, stalled)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	// Through the command line: the flag bounds it, the error names the
	// node and says what to do.
	t2 := time.Now()
	out, errs, err = homelab("apply", "--until", "cluster", "--node-timeout", "3s", "--health-timeout", "3s")
	if err == nil {
		t.Fatalf("apply with %s stopped succeeded:\n%s", stalled, out)
	}
	for _, want := range []string{"homelab: bootstrapping talos: node " + stalled, "no answer from its talos API within 3s", "hint: check that " + stalled + " is running", "raise --node-timeout (it was 3s)"} {
		if !strings.Contains(errs, want) {
			t.Errorf("apply with %s stopped: stderr lacks %q:\n%s", stalled, want, errs)
		}
	}
	if d := time.Since(t2); d > 30*time.Second {
		t.Errorf("apply with a stopped node took %s, want it bounded by --node-timeout 3s", d)
	}
	lab, _, err := spec.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	lc := &labContext{File: file, Dir: dir, Lab: lab, Store: store, Bundle: bundle}
	var w bytes.Buffer
	t1 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := runCluster(ctx, &w, lc, clusterOptions{via: string(tunnel.ModeAuto), nodeTimeout: 3 * time.Second, healthTimeout: 3 * time.Second})
	took := time.Since(t1)
	if err == nil {
		cl.close()
		t.Fatalf("runCluster with %s stopped succeeded:\n%s", stalled, w.String())
	}
	var h hinter
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), "--node-timeout") {
		t.Errorf("error %q has no hint about --node-timeout", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "node "+stalled) || !strings.Contains(msg, "within 3s") {
		t.Errorf("error = %q, want it to name %s and the 3s bound", msg, stalled)
	}
	for _, other := range []string{cp, name + "-worker-1"} {
		if strings.Contains(msg, "node "+other) {
			t.Errorf("error = %q blames %s, which answers", msg, other)
		}
	}
	if took > 20*time.Second {
		t.Errorf("the failing cluster phase took %s, want it bounded by the 3s node timeout", took)
	}
	t.Logf("stalled node: failed in %s: %v", took.Round(time.Millisecond), err)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	// 4. A worker leaves the spec: drained out of Kubernetes (the
	// stand-in's API keeps the Node objects) before its machine goes.
	i := strings.Index(yaml, "  workers:\n    count: 2")
	if i < 0 {
		t.Fatal("the reference lab has no 'workers: count: 2' to change")
	}
	yaml = yaml[:i] + strings.Replace(yaml[i:], "count: 2", "count: 1", 1)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, err = homelab("apply", "--until", "cluster", "--node-timeout", "60s", "--health-timeout", "60s")
	if err != nil {
		t.Fatalf("apply without %s: %v\nstdout:\n%s\nstderr:\n%s\nVPN server log:\n%s", stalled, err, out, errs, tailLog(stateDir, name+"-vpn"))
	}
	for _, want := range []string{
		"workers leaving the spec: " + stalled + ": draining them out of Kubernetes",
		stalled + ": cordoned", stalled + ": node deleted from kubernetes",
		"waiting for the Talos API of " + cp + ", " + name + "-worker-1 (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply without %s: output lacks %q:\n%s", stalled, want, out)
		}
	}
	if !strings.Contains(errs, "delete netns/"+stalled) {
		t.Errorf("apply without %s did not delete its namespace:\n%s", stalled, errs)
	}
	if d, n := strings.Index(out, "node deleted from kubernetes"), strings.Index(out, "== phase infra done"); d < 0 || n < d {
		t.Errorf("the node was not deleted from Kubernetes before the infra phase ended")
	}
}

// standinState reads a stand-in's state file in the local provider's
// runtime folder.
func standinState(t *testing.T, stateDir, node string) (st struct{ Configured, Bootstrapped bool }) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, "local", "config", node, "state.json"))
	if err != nil {
		t.Fatalf("reading the state of stand-in %s: %v", node, err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("stand-in %s state: %v", node, err)
	}
	return st
}

// standinPID is the pid the supervisor runs a daemon with.
func standinPID(t *testing.T, stateDir, name string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, "local", "run", name+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// tailLog is the end of a daemon's log in the local provider's runtime
// folder, for failure messages.
func tailLog(stateDir, name string) string {
	data, err := os.ReadFile(filepath.Join(stateDir, "local", "logs", name+".log"))
	if err != nil {
		return err.Error()
	}
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab-dev/homelab/internal/provider/local/ns"
)

// The supervisor is one process per lab (the hidden command "homelab
// __supervise --state DIR"), started by apply in its own session so that
// it outlives apply. It runs the daemons described by the files in
// <state>/local/procs, each inside its namespace, restarts those that die
// (with backoff), and writes what it runs to <state>/local/run. Apply and
// destroy talk to it through those folders and SIGHUP.

// procSpec is one supervised daemon, as apply writes it.
type procSpec struct {
	// Name is unique in the lab (the guest namespace's name).
	Name string `json:"name"`
	// NS is the namespace the daemon runs in.
	NS string `json:"ns"`
	// Argv starts the daemon; Argv[0] is an absolute path.
	Argv []string `json:"argv"`
	// Hash identifies the argv and the content of the config files the
	// daemon reads: a change restarts it.
	Hash string `json:"hash"`
	// TCP and UDP ports the daemon listens on once ready.
	TCP []uint16 `json:"tcp,omitempty"`
	UDP []uint16 `json:"udp,omitempty"`
	// Links the daemon creates in its namespace once ready (a TUN device).
	Links []string `json:"links,omitempty"`
}

// procState is what the supervisor reports about one daemon.
type procState struct {
	PID      int       `json:"pid"`
	Hash     string    `json:"hash"`
	Restarts int       `json:"restarts"`
	Started  time.Time `json:"started"`
	LastExit string    `json:"lastExit,omitempty"`
}

// layout is the provider's runtime folder, <state>/local.
type layout string

func (l layout) procs() string              { return filepath.Join(string(l), "procs") }
func (l layout) run() string                { return filepath.Join(string(l), "run") }
func (l layout) logs() string               { return filepath.Join(string(l), "logs") }
func (l layout) configs() string            { return filepath.Join(string(l), "config") }
func (l layout) config(name string) string  { return filepath.Join(l.configs(), name) }
func (l layout) spec(name string) string    { return filepath.Join(l.procs(), name+".json") }
func (l layout) state(name string) string   { return filepath.Join(l.run(), name+".json") }
func (l layout) pidFile(name string) string { return filepath.Join(l.run(), name+".pid") }
func (l layout) log(name string) string     { return filepath.Join(l.logs(), name+".log") }
func (l layout) supervisorPID() string      { return filepath.Join(l.run(), "supervisor.pid") }
func (l layout) supervisorLock() string     { return filepath.Join(l.run(), "supervisor.lock") }

func (l layout) mkdirs() error {
	for _, d := range []string{l.procs(), l.run(), l.logs()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	// The daemons' configs hold private keys in plaintext while the lab
	// runs: keep the whole runtime folder out of Git even when the lab
	// folder, encrypted state included, is committed.
	ignore := filepath.Join(string(l), ".gitignore")
	if _, err := os.Stat(ignore); err != nil {
		if err := writeFileAtomic(ignore, []byte("# runtime files of the local provider: never commit\n*\n"), 0o600); err != nil {
			return fmt.Errorf("creating %s: %w", ignore, err)
		}
	}
	return nil
}

// writeFileAtomic writes through a temporary file and a rename, so a
// reader (or a kill -9) never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (l layout) readSpecs() (map[string]procSpec, error) {
	ents, err := os.ReadDir(l.procs())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]procSpec{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]procSpec{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		var s procSpec
		if err := readJSON(l.spec(name), &s); err != nil || s.Name != name || len(s.Argv) == 0 {
			continue
		}
		out[name] = s
	}
	return out, nil
}

// cmdline reads a process's argv; nil when it is gone or a zombie.
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// alive reports whether pid runs argv (compared without argv[0], which
// the kernel may show differently after the binary was replaced).
func alive(pid int, argv []string) bool {
	if pid <= 0 {
		return false
	}
	got := cmdline(pid)
	return len(got) > 0 && len(got) == len(argv) && slices.Equal(got[1:], argv[1:])
}

// exited reports whether pid has finished exiting: gone, or a zombie
// (which has closed its files: sockets and TUN devices are free again).
func exited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// supervisorArgs are the hidden command's arguments after the executable.
func supervisorArgs(stateDir string) []string {
	return []string{"__supervise", "--state", stateDir}
}

// Supervise runs the supervisor of the lab whose state folder is stateDir
// until ctx ends, then stops every daemon. It returns at once when another
// supervisor holds the lab's lock.
func Supervise(ctx context.Context, stateDir string) error {
	l := layout(filepath.Join(stateDir, "local"))
	if err := l.mkdirs(); err != nil {
		return err
	}
	lock, err := os.OpenFile(l.supervisorLock(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("opening the supervisor lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // another supervisor runs this lab
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	s := &supervisor{l: l, log: logger, children: map[string]*child{}, exits: make(chan exit, 16), wake: make(chan struct{}, 1)}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	s.killOrphans()
	s.reconcile()
	// The pid file says "running, and in charge": only now, once the
	// daemons a killed predecessor left are gone and ours are starting.
	if err := writeFileAtomic(l.supervisorPID(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		s.stopAll()
		return err
	}
	for {
		select {
		case <-ctx.Done():
			s.stopAll()
			os.Remove(l.supervisorPID())
			return nil
		case <-hup:
			s.reconcile()
		case <-s.wake:
			s.reconcile()
		case <-tick.C:
			if _, err := os.Stat(string(l)); err != nil {
				// The lab's folder is gone: nobody can stop us anymore.
				s.stopAll()
				return nil
			}
			s.reconcile()
		case e := <-s.exits:
			s.exited(e)
		}
	}
}

type child struct {
	spec     procSpec
	cmd      *exec.Cmd
	restarts int
	started  time.Time
	backoff  time.Duration
	retryAt  time.Time // when not running: when to start again
	stopping bool
	waited   chan struct{} // closed when cmd's Wait returned
}

type exit struct {
	name string
	cmd  *exec.Cmd
	err  error
}

type supervisor struct {
	l        layout
	log      *log.Logger
	children map[string]*child
	exits    chan exit
	wake     chan struct{} // a backoff ended: reconcile now
}

// killOrphans ends the daemons a previous supervisor of the lab left
// running when it was killed: they hold the ports the new ones need, and
// nobody would restart them.
func (s *supervisor) killOrphans() {
	specs, _ := s.l.readSpecs()
	var pids []int
	for name, sp := range specs {
		var st procState
		if readJSON(s.l.state(name), &st) != nil || !alive(st.PID, sp.Argv) {
			continue
		}
		s.log.Printf("%s: ending pid %d, left by a previous supervisor", name, st.PID)
		_ = syscall.Kill(-st.PID, syscall.SIGKILL)
		_ = syscall.Kill(st.PID, syscall.SIGKILL)
		pids = append(pids, st.PID)
	}
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; i < len(pids) && time.Now().Before(deadline); {
		if !exited(pids[i]) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		i++
	}
}

func (s *supervisor) reconcile() {
	specs, err := s.l.readSpecs()
	if err != nil {
		s.log.Printf("reading daemon specs: %v", err)
		return
	}
	for name, c := range s.children {
		sp, ok := specs[name]
		if (!ok || sp.Hash != c.spec.Hash) && c.cmd != nil && !c.stopping {
			s.log.Printf("%s: stopping (removed or changed)", name)
			s.stop(c)
		}
		if !ok && c.cmd == nil {
			delete(s.children, name)
			os.Remove(s.l.state(name))
			os.Remove(s.l.pidFile(name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		sp := specs[name]
		c, ok := s.children[name]
		if !ok {
			c = &child{spec: sp}
			s.children[name] = c
		}
		if c.cmd == nil && time.Now().After(c.retryAt) {
			if c.spec.Hash != sp.Hash {
				c.spec, c.restarts, c.backoff = sp, 0, 0
			}
			s.start(c)
		}
	}
}

func (s *supervisor) start(c *child) {
	sp := c.spec
	logf, err := os.OpenFile(s.l.log(sp.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.log.Printf("%s: opening its log: %v", sp.Name, err)
		c.retryAt = time.Now().Add(time.Second)
		return
	}
	defer logf.Close()
	cmd := exec.Command(sp.Argv[0], sp.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HOMELAB_SUPERVISED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The child is forked from a thread inside the namespace and inherits it.
	err = ns.Do(sp.NS, cmd.Start)
	if err != nil {
		s.log.Printf("%s: starting: %v", sp.Name, err)
		c.retryAt = time.Now().Add(s.nextBackoff(c))
		return
	}
	waited := make(chan struct{})
	c.cmd, c.started, c.stopping, c.waited = cmd, time.Now(), false, waited
	s.log.Printf("%s: started pid %d in %s", sp.Name, cmd.Process.Pid, sp.NS)
	s.writeState(c, "")
	go func() {
		err := cmd.Wait()
		close(waited)
		s.exits <- exit{name: sp.Name, cmd: cmd, err: err}
	}()
}

func (s *supervisor) nextBackoff(c *child) time.Duration {
	switch {
	case c.backoff == 0:
		c.backoff = 100 * time.Millisecond
	case c.backoff < 5*time.Second:
		c.backoff *= 2
	}
	return c.backoff
}

func (s *supervisor) writeState(c *child, lastExit string) {
	st := procState{Hash: c.spec.Hash, Restarts: c.restarts, Started: c.started, LastExit: lastExit}
	if c.cmd != nil {
		st.PID = c.cmd.Process.Pid
	}
	b, _ := json.Marshal(st)
	_ = writeFileAtomic(s.l.state(c.spec.Name), b, 0o600)
	if st.PID > 0 {
		_ = writeFileAtomic(s.l.pidFile(c.spec.Name), []byte(strconv.Itoa(st.PID)+"\n"), 0o600)
	} else {
		os.Remove(s.l.pidFile(c.spec.Name))
	}
}

func (s *supervisor) exited(e exit) {
	c, ok := s.children[e.name]
	if !ok || c.cmd != e.cmd {
		return
	}
	c.cmd = nil
	why := "exited"
	if e.err != nil {
		why = e.err.Error()
	}
	if c.stopping {
		s.log.Printf("%s: stopped", e.name)
		c.restarts, c.backoff, c.retryAt = 0, 0, time.Time{}
		s.writeState(c, why)
		s.reconcile()
		return
	}
	if time.Since(c.started) > 10*time.Second {
		c.backoff = 0
	}
	c.restarts++
	wait := s.nextBackoff(c)
	c.retryAt = time.Now().Add(wait)
	s.log.Printf("%s: %s; restart %d in %s", e.name, why, c.restarts, wait)
	s.writeState(c, why)
	time.AfterFunc(wait, func() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
}

// stop asks a child to end: SIGTERM to its process group, SIGKILL after a
// second if it is still there.
func (s *supervisor) stop(c *child) {
	c.stopping = true
	pid := c.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	waited := c.waited
	time.AfterFunc(time.Second, func() {
		select {
		case <-waited:
		default:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
}

func (s *supervisor) stopAll() {
	for _, c := range s.children {
		if c.cmd != nil {
			s.stop(c)
		}
	}
	deadline := time.After(2 * time.Second)
	for {
		running := 0
		for _, c := range s.children {
			if c.cmd != nil {
				running++
			}
		}
		if running == 0 {
			break
		}
		select {
		case e := <-s.exits:
			if c, ok := s.children[e.name]; ok && c.cmd == e.cmd {
				c.cmd = nil
			}
		case <-deadline:
			for _, c := range s.children {
				if c.cmd != nil {
					_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
				}
			}
			return
		}
	}
	for name := range s.children {
		os.Remove(s.l.pidFile(name))
		os.Remove(s.l.state(name))
	}
}

// specHash identifies a daemon's argv and config files.
func specHash(argv []string, files map[string][]byte) string {
	h := sha256.New()
	for _, a := range argv {
		fmt.Fprintf(h, "%q\n", a)
	}
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s %x\n", k, sha256.Sum256(files[k]))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Package ns manages named Linux network namespaces (the files under
// /run/netns that ip-netns(8) also uses) and runs code inside them: on an
// OS thread locked for the duration, switched into the namespace and back.
// Sockets opened inside keep their namespace after the thread returns, so
// Dial and Listen hand back connections usable from anywhere.
package ns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir holds the named namespaces.
const Dir = "/run/netns"

// nsfsMagic is the filesystem type of a namespace bind mount.
const nsfsMagic = 0x6e736673

// Path returns the file of the named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// Exists reports whether name is a live namespace (a bind-mounted nsfs
// file, not a leftover empty file from an interrupted create).
func Exists(name string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(Path(name), &st); err != nil {
		return false
	}
	return st.Type == nsfsMagic
}

// List returns the names of the live namespaces that satisfy keep.
func List(keep func(string) bool) ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing network namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if keep(e.Name()) && Exists(e.Name()) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Create makes the named namespace if it does not exist. A leftover file
// from an interrupted create is replaced.
func Create(name string) error {
	if Exists(name) {
		return nil
	}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", Dir, err)
	}
	p := Path(name)
	_ = unix.Unmount(p, unix.MNT_DETACH)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the leftover %s: %w", p, err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("creating network namespace %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			runtime.UnlockOSThread()
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		err = unix.Mount(self, p, "none", unix.MS_BIND, "")
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		} // else the thread dies with its goroutine, as it must
		errc <- err
	}()
	if err := <-errc; err != nil {
		os.Remove(p)
		return fmt.Errorf("creating network namespace %s: %w", name, err)
	}
	return nil
}

// Delete kills every process still inside the namespace, then removes it.
// Deleting a namespace that does not exist is not an error.
func Delete(name string) error {
	p := Path(name)
	if Exists(name) {
		for _, pid := range PIDs(name) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("deleting network namespace %s: %w", name, err)
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting network namespace %s: %w", name, err)
	}
	return nil
}

// PIDs lists the processes whose network namespace is the named one.
func PIDs(name string) []int {
	var want unix.Stat_t
	if err := unix.Stat(Path(name), &want); err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			out = append(out, pid)
		}
	}
	return out
}

// Open returns a handle to the named namespace; the caller closes it.
func Open(name string) (netns.NsHandle, error) {
	if !Exists(name) {
		return netns.None(), fmt.Errorf("network namespace %s does not exist", name)
	}
	h, err := netns.GetFromPath(Path(name))
	if err != nil {
		return netns.None(), fmt.Errorf("opening network namespace %s: %w", name, err)
	}
	return h, nil
}

// Do runs f on an OS thread inside the named namespace and returns its
// error. Anything f starts on other goroutines runs outside it.
func Do(name string, f func() error) error {
	h, err := Open(name)
	if err != nil {
		return err
	}
	defer h.Close()
	return DoHandle(h, f)
}

// DoHandle is Do with an open namespace handle.
func DoHandle(h netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("reading the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		} // else this thread stays tainted and exits with the goroutine
		errc <- ferr
	}()
	return <-errc
}

// Dial connects from inside the named namespace.
func Dial(ctx context.Context, name, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(name, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the named namespace.
func Listen(name, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := Do(name, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside the named namespace.
func ListenPacket(name, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := Do(name, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Sysctl writes a value under /proc/sys (path with slashes, for example
// net/ipv4/ip_forward) inside the named namespace. A key the kernel does
// not have is skipped when optional is set.
func Sysctl(name, key, value string, optional bool) error {
	return Do(name, func() error {
		err := os.WriteFile("/proc/sys/"+key, []byte(value), 0)
		if optional && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("setting %s in %s: %w", strings.ReplaceAll(key, "/", "."), name, err)
		}
		return nil
	})
}

// ReadSysctl reads a value under /proc/sys inside the named namespace.
func ReadSysctl(name, key string) (string, error) {
	var v string
	err := Do(name, func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

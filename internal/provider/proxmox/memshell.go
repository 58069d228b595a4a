package proxmox

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// MemShell is an in-memory HostShell for tests and benchmarks: it keeps
// the host's files and each container's files, and understands the
// commands the provider runs (install, cat, rm, pvesm path, pct push,
// pct exec, systemctl, nft, sysctl). Any other command is an error.
type MemShell struct {
	mu sync.Mutex
	// Host files by path.
	Host map[string][]byte
	// Guest files by VMID and path.
	Guest map[int]map[string][]byte
	// Enabled services by VMID (0: the host).
	Enabled map[int][]string
	// Commands is every argv run, in order (stdin not kept).
	Commands [][]string
	// SnippetDir is where pvesm path puts snippets (default /var/lib/vz/snippets).
	SnippetDir string
	// Fail, when set, makes commands whose first words match fail.
	Fail string
	// OnWrite, when set, is called for each host file written (a test
	// uses it to show snippets to a simulated API).
	OnWrite func(path string, data []byte)
	// OnRun, when set, is called with every command before it runs (a
	// test uses it to mirror pct set into a simulated API).
	OnRun func(argv []string)
}

// NewMemShell returns an empty host.
func NewMemShell() *MemShell {
	return &MemShell{Host: map[string][]byte{}, Guest: map[int]map[string][]byte{}, Enabled: map[int][]string{}}
}

// Run interprets argv.
func (s *MemShell) Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Commands = append(s.Commands, slices.Clone(argv))
	if s.OnRun != nil {
		s.OnRun(slices.Clone(argv))
	}
	line := strings.Join(argv, " ")
	if s.Fail != "" && strings.HasPrefix(line, s.Fail) {
		return nil, fmt.Errorf("%s on the host: exit status 1: simulated failure", argv[0])
	}
	return s.run(0, stdin, argv)
}

func (s *MemShell) files(vmid int) map[string][]byte {
	if vmid == 0 {
		return s.Host
	}
	if s.Guest[vmid] == nil {
		s.Guest[vmid] = map[string][]byte{}
	}
	return s.Guest[vmid]
}

func (s *MemShell) run(vmid int, stdin []byte, argv []string) ([]byte, error) {
	fail := func(format string, a ...any) ([]byte, error) {
		return nil, fmt.Errorf("%s on the host: exit status 1: "+format, append([]any{argv[0]}, a...)...)
	}
	fs := s.files(vmid)
	switch {
	case len(argv) == 6 && argv[0] == "install" && argv[1] == "-D" && argv[2] == "-m" && argv[4] == "/dev/stdin":
		fs[argv[5]] = slices.Clone(stdin)
		if vmid == 0 && s.OnWrite != nil {
			s.OnWrite(argv[5], stdin)
		}
		return nil, nil
	case len(argv) == 2 && argv[0] == "cat":
		d, ok := fs[argv[1]]
		if !ok {
			return fail("%s: %v", argv[1], os.ErrNotExist)
		}
		return slices.Clone(d), nil
	case len(argv) == 3 && argv[0] == "rm" && argv[1] == "-f":
		delete(fs, argv[2])
		return nil, nil
	case len(argv) == 3 && argv[0] == "pvesm" && argv[1] == "path" && vmid == 0:
		_, rest, ok := strings.Cut(argv[2], ":snippets/")
		if !ok {
			return fail("unsupported volume %s", argv[2])
		}
		dir := s.SnippetDir
		if dir == "" {
			dir = "/var/lib/vz/snippets"
		}
		return []byte(dir + "/" + rest + "\n"), nil
	case len(argv) == 7 && argv[0] == "pct" && argv[1] == "push" && argv[5] == "--perms" && vmid == 0:
		id, err := strconv.Atoi(argv[2])
		if err != nil {
			return fail("bad vmid")
		}
		d, ok := fs[argv[3]]
		if !ok {
			return fail("%s: %v", argv[3], os.ErrNotExist)
		}
		s.files(id)[argv[4]] = slices.Clone(d)
		return nil, nil
	case len(argv) >= 5 && argv[0] == "pct" && argv[1] == "exec" && argv[3] == "--" && vmid == 0:
		id, err := strconv.Atoi(argv[2])
		if err != nil {
			return fail("bad vmid")
		}
		return s.run(id, stdin, argv[4:])
	case len(argv) == 5 && argv[0] == "pct" && argv[1] == "set" && argv[3] == "--dev0" && vmid == 0:
		return nil, nil
	case len(argv) == 3 && argv[0] == "mkdir" && argv[1] == "-p":
		return nil, nil
	case len(argv) == 2 && argv[0] == "systemctl" && argv[1] == "daemon-reload":
		return nil, nil
	case len(argv) == 4 && argv[0] == "systemctl" && argv[1] == "enable" && argv[2] == "--now":
		if !slices.Contains(s.Enabled[vmid], argv[3]) {
			s.Enabled[vmid] = append(s.Enabled[vmid], argv[3])
		}
		return nil, nil
	case len(argv) == 3 && argv[0] == "systemctl" && argv[1] == "restart":
		return nil, nil
	case len(argv) == 4 && argv[0] == "systemctl" && argv[1] == "disable" && argv[2] == "--now":
		s.Enabled[vmid] = slices.DeleteFunc(s.Enabled[vmid], func(x string) bool { return x == argv[3] })
		return nil, nil
	case len(argv) == 3 && argv[0] == "nft" && argv[1] == "-f":
		if _, ok := fs[argv[2]]; !ok {
			return fail("%s: %v", argv[2], os.ErrNotExist)
		}
		return nil, nil
	case len(argv) >= 4 && argv[0] == "nft" && argv[1] == "delete" && argv[2] == "table":
		return nil, nil
	case len(argv) == 3 && argv[0] == "sysctl" && argv[1] == "-p":
		return nil, nil
	}
	return fail("command not understood by the fake host: %q", argv)
}

// Close does nothing.
func (s *MemShell) Close() error { return nil }

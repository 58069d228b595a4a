package local

import (
	"bufio"
	"encoding/json"
	"os"
	"strconv"
	"strings"
)

func jsonMarshal(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

// listening reports whether every port is bound in the network namespace
// of pid: TCP ports in the LISTEN state, UDP ports bound at all. It reads
// /proc/<pid>/net, which shows the sockets of the namespace pid is in.
// A socket bound to [::] (dual stack) shows in tcp6/udp6 only, so both
// files count.
func listening(pid int, tcp, udp []uint16) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/net/"
	return portsIn(tcp, "0A", dir+"tcp", dir+"tcp6") && portsIn(udp, "", dir+"udp", dir+"udp6")
}

// ready reports whether a supervised daemon serves: its ports are bound
// and its links exist, as seen from its namespace.
func ready(pid int, sp procSpec) bool {
	return listening(pid, sp.TCP, sp.UDP) && linksIn("/proc/"+strconv.Itoa(pid)+"/net/dev", sp.Links)
}

// linksIn reports whether every named link appears in a /proc/net/dev table.
func linksIn(path string, names []string) bool {
	if len(names) == 0 {
		return true
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			have[strings.TrimSpace(name)] = true
		}
	}
	for _, n := range names {
		if !have[n] {
			return false
		}
	}
	return true
}

func portsIn(want []uint16, state string, paths ...string) bool {
	if len(want) == 0 {
		return true
	}
	found := map[uint16]bool{}
	for _, p := range paths {
		scanPorts(p, state, found)
	}
	for _, p := range want {
		if !found[p] {
			return false
		}
	}
	return true
}

// scanPorts adds the local ports of a /proc/net socket table to found,
// keeping only sockets in the given state (hex, "" for any).
func scanPorts(path, state string, found map[uint16]bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[0] == "sl" {
			continue
		}
		if state != "" && fields[3] != state {
			continue
		}
		_, port, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(port, 16, 16); err == nil {
			found[uint16(n)] = true
		}
	}
}

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
func listening(pid int, tcp, udp []uint16) bool {
	if len(tcp) > 0 && !portsIn("/proc/"+strconv.Itoa(pid)+"/net/tcp", tcp, "0A") {
		return false
	}
	if len(udp) > 0 && !portsIn("/proc/"+strconv.Itoa(pid)+"/net/udp", udp, "") {
		return false
	}
	return true
}

func portsIn(path string, want []uint16, state string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	found := map[uint16]bool{}
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
	for _, p := range want {
		if !found[p] {
			return false
		}
	}
	return true
}

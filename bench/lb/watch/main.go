// Command watch kills a backend server and measures how long the proxy in
// front of it takes to take that server out of rotation (time to eject).
// It polls homelab lb's /status JSON or HAProxy's stats socket every 10ms
// and prints the milliseconds from the kill to the first "down" state,
// then the connections the proxy had open to that server just before the
// kill (requests already forwarded there, which a layer 4 proxy cannot
// replay elsewhere).
package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	pid := flag.Int("kill", 0, "PID to SIGKILL first (0: kill nothing)")
	status := flag.String("homelab", "", "homelab lb /status URL")
	sock := flag.String("haproxy", "", "HAProxy stats socket path")
	backend := flag.String("backend", "", "HAProxy backend name")
	server := flag.String("server", "", "server: address (homelab) or name (HAProxy)")
	limit := flag.Duration("timeout", 30*time.Second, "give up after")
	flag.Parse()

	probe := func() (bool, int, error) { return homelabDown(*status, *server) }
	if *sock != "" {
		probe = func() (bool, int, error) { return haproxyDown(*sock, *backend, *server) }
	}
	down, open, err := probe()
	if err != nil || down {
		fmt.Fprintf(os.Stderr, "watch: server %s is not up before the kill (err %v)\n", *server, err)
		os.Exit(1)
	}
	start := time.Now()
	if *pid != 0 {
		if err := syscall.Kill(*pid, syscall.SIGKILL); err != nil {
			fmt.Fprintf(os.Stderr, "watch: killing %d: %v\n", *pid, err)
			os.Exit(1)
		}
	}
	for time.Since(start) < *limit {
		if down, _, err := probe(); err == nil && down {
			fmt.Printf("%d %d\n", time.Since(start).Milliseconds(), open)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("timeout")
	os.Exit(1)
}

type lbStatus struct {
	Backends []struct {
		Servers []struct {
			Address string `json:"address"`
			State   string `json:"state"`
			Active  int    `json:"active"`
		} `json:"servers"`
	} `json:"backends"`
}

var client = &http.Client{Timeout: time.Second}

// homelabDown reports whether server is out of rotation and how many
// connections are open to it.
func homelabDown(url, server string) (bool, int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return false, 0, err
	}
	defer resp.Body.Close()
	var st lbStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, 0, err
	}
	for _, b := range st.Backends {
		for _, s := range b.Servers {
			if s.Address == server {
				return s.State != "up", s.Active, nil
			}
		}
	}
	return false, 0, fmt.Errorf("server %s not in status", server)
}

// haproxyDown reports whether backend/server is DOWN or in maintenance and
// its current sessions (scur).
func haproxyDown(sock, backend, server string) (bool, int, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("show stat\n")); err != nil {
		return false, 0, err
	}
	r := csv.NewReader(bufio.NewReader(c))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return false, 0, err
	}
	if len(recs) == 0 {
		return false, 0, fmt.Errorf("empty stats")
	}
	col, scur := -1, -1
	for i, h := range recs[0] {
		switch strings.TrimPrefix(h, "# ") {
		case "status":
			col = i
		case "scur":
			scur = i
		}
	}
	if col < 0 || scur < 0 {
		return false, 0, fmt.Errorf("no status column")
	}
	for _, rec := range recs[1:] {
		if len(rec) > col && rec[0] == backend && rec[1] == server {
			st := rec[col]
			n, _ := strconv.Atoi(rec[scur])
			return strings.HasPrefix(st, "DOWN") || strings.HasPrefix(st, "MAINT"), n, nil
		}
	}
	return false, 0, fmt.Errorf("server %s/%s not in stats", backend, server)
}

package lbcmd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-dev/homelab/internal/lb"
)

func greeter(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, name+"\n")
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func greeting(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestServeReloadsOnSIGHUP(t *testing.T) {
	one, two := greeter(t, "one"), greeter(t, "two")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	front := ln.Addr().String()
	ln.Close()
	conf := func(server string) []byte {
		return fmt.Appendf(nil, "frontends:\n  - name: web\n    listen: [%q]\n    backend: app\nbackends:\n  - name: app\n    servers: [{address: %q}]\n", front, server)
	}
	path := filepath.Join(t.TempDir(), "lb.yaml")
	os.WriteFile(path, conf(one), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *lb.Balancer, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- Serve(ctx, Options{ConfigPath: path, Watch: -1, Stderr: io.Discard, LogFormat: "json",
			Started: func(b *lb.Balancer) { started <- b }})
	}()
	b := <-started
	if got := greeting(t, front); got != "one" {
		t.Fatalf("reached %q", got)
	}
	os.WriteFile(path, conf(two), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for greeting(t, front) != "two" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the config")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b.Status().Reloads != 1 {
		t.Errorf("reloads = %d, want 1", b.Status().Reloads)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Serve returned %v after cancel", err)
	}
}

func TestMainCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("frontends:\n  - name: web\n    listen: [\"127.0.0.1:80\"]\n    backend: app\nbackends:\n  - name: app\n    servers: [{address: \"10.0.0.1:80\"}]\n"), 0o600)
	os.WriteFile(bad, []byte("frontends:\n  - name: web\n    lisen: [\"127.0.0.1:80\"]\n"), 0o600)
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", "--config", good}, 0, "ok", ""},
		{[]string{"check", "--config", bad}, 1, "", `bad.yaml:3:5: frontends[0].lisen: unknown field "lisen"`},
		{[]string{"frobnicate"}, 2, "", "unknown command"},
		{nil, 2, "", "usage:"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := Main(context.Background(), tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
			t.Errorf("Main(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out.String(), errb.String(), tt.code, tt.out, tt.err)
		}
	}
}

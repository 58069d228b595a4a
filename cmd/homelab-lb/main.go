// Command homelab-lb is the edge load balancer on its own: a small binary
// for the load balancer container, linking neither Talos nor Proxmox
// libraries (deps_test.go proves it). `homelab lb` runs the same code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/homelab-dev/homelab/internal/lb/lbcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := lbcmd.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

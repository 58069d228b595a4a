// Command homelab turns one declarative lab.yaml into a Kubernetes homelab
// (Proxmox VE or the local network-namespace provider) and operates it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/homelab-dev/homelab/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

package vpn

import (
	"testing"

	"github.com/homelab-dev/homelab/internal/depcheck"
)

// TestDeps keeps the daemon a daemon: it knows nothing of the spec, the
// planner or the providers, and does not link Talos or gRPC.
func TestDeps(t *testing.T) {
	depcheck.Check(t, "github.com/homelab-dev/homelab/internal/vpn", []string{
		"github.com/homelab-dev/homelab/internal/",
		"github.com/siderolabs/",
		"google.golang.org/grpc",
		"github.com/luthermonson/go-proxmox",
	}, nil)
}

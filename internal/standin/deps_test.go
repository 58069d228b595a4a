package standin

import (
	"testing"

	"github.com/homelab-dev/homelab/internal/depcheck"
)

// TestDeps keeps the stand-in apart from the lab's planning code: it only
// reuses the load balancer's PROXY protocol parser.
func TestDeps(t *testing.T) {
	depcheck.Check(t, "github.com/homelab-dev/homelab/internal/standin", []string{
		"github.com/homelab-dev/homelab/internal/",
		"golang.zx2c4.com/wireguard",
		"github.com/luthermonson/go-proxmox",
	}, []string{"github.com/homelab-dev/homelab/internal/lb/proxyproto"})
}

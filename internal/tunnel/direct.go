package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Dialer dials TCP connections to the lab's admin network, through the
// tunnel or directly. The Talos and Kubernetes clients take one.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Close releases what the dialer holds (the tunnel); no-op for Direct.
	Close() error
}

var (
	_ Dialer = (*Tunnel)(nil)
	_ Dialer = Direct{}
)

// Direct dials with the operating system's network stack, for when the
// caller is already on the admin network (the manager VM, or a host with
// its own VPN up).
type Direct struct {
	// Timeout bounds each connection attempt; zero means 10s.
	Timeout time.Duration
}

// DialContext dials addr with net.Dialer.
func (d Direct) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	t := d.Timeout
	if t == 0 {
		t = 10 * time.Second
	}
	nd := net.Dialer{Timeout: t}
	return nd.DialContext(ctx, network, addr)
}

// Close does nothing.
func (Direct) Close() error { return nil }

// Mode says how Pick reaches the admin network.
type Mode string

// The ways of reaching the admin network.
const (
	ModeAuto   Mode = "auto"   // direct if the probe answers, else the tunnel
	ModeDirect Mode = "direct" // always direct
	ModeTunnel Mode = "tunnel" // always the tunnel
)

// DefaultProbeTimeout is how long Pick waits for a direct connection.
const DefaultProbeTimeout = 1500 * time.Millisecond

// Pick returns the dialer to reach the admin network. In ModeAuto it tries
// a direct TCP connection to probe (host:port, usually the first control
// plane's Talos API) for at most timeout and returns Direct if it
// answers, else opens the tunnel. It reports which it chose as a Mode.
func Pick(ctx context.Context, mode Mode, probe string, timeout time.Duration, open func(context.Context) (*Tunnel, error)) (Dialer, Mode, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	switch mode {
	case ModeDirect:
		return Direct{}, ModeDirect, nil
	case ModeTunnel:
	case ModeAuto, "":
		pctx, cancel := context.WithTimeout(ctx, timeout)
		c, err := (&net.Dialer{}).DialContext(pctx, "tcp", probe)
		cancel()
		if err == nil {
			c.Close()
			return Direct{}, ModeDirect, nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	default:
		return nil, "", fmt.Errorf("reaching the admin network: unknown mode %q (auto, direct or tunnel)", mode)
	}
	if open == nil {
		return nil, "", errors.New("reaching the admin network: no tunnel to open")
	}
	t, err := open(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("reaching the admin network: %w", err)
	}
	return t, ModeTunnel, nil
}

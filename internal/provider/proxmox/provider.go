// Package proxmox builds a lab on a Proxmox VE host through the Proxmox VE
// API: bridges for the admin and apps networks, the cluster firewall's
// groups and IP sets, downloaded images and templates, the VPN and load
// balancer containers, the manager VM and the Talos VMs, started in order.
//
// Everything is reconciled from live state. Each object the lab owns
// carries a mark — tags homelab and homelab-<lab> on guests, the comment
// homelab:<lab> on bridges, IP sets and security groups named <lab>-... —
// and Observe finds objects by that mark only, so a guest without the
// lab's tags is never changed or deleted.
//
// The API has no call to put files into a container or onto the host's
// snippet storage; those few steps go through SSH to the host (HostShell).
package proxmox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homelab-dev/homelab/internal/provider"
	"github.com/homelab-dev/homelab/internal/provider/proxmox/pveapi"
	"github.com/homelab-dev/homelab/internal/spec"
)

var _ provider.Provider = (*Provider)(nil)
var _ provider.Keeper = (*Provider)(nil)
var _ provider.Statuser = (*Provider)(nil)

// Options tune New. The zero value verifies TLS and reads the token as the
// spec says.
type Options struct {
	// Insecure skips TLS verification (only when the user asked; a
	// warning is printed to Log).
	Insecure bool
	// Log receives warnings (nil: discarded).
	Log io.Writer
	// HTTPClient replaces the client New builds (tests). Its TLS settings
	// are then the caller's.
	HTTPClient *http.Client
	// Token overrides the token secret from the spec (tests).
	Token string
	// Parallel bounds concurrent API requests (default 8).
	Parallel int
	// Shell reaches the host for pct push/exec and snippets. When nil, New
	// dials SSH as host.proxmox.ssh says.
	Shell HostShell
	// Binary is the homelab binary installed into the containers
	// (default: the running executable).
	Binary string
	// PurgeImages makes destroy delete the downloaded images and
	// templates too (Kept then reports nothing).
	PurgeImages bool
	// StartTimeout bounds the wait for a started guest (default 5m).
	StartTimeout time.Duration
	// Poll is the interval at which tasks, guest agents and locks are
	// polled (default 500ms); a task still running after 10 polls is
	// polled half as often.
	Poll time.Duration
	// Refresh makes Observe read each guest's configuration and firewall
	// (three calls per guest) instead of trusting the configuration hash
	// in its tags, so that edits made by hand show as drift.
	Refresh bool
}

// Provider builds one lab on one Proxmox VE node.
type Provider struct {
	lab   *spec.Lab
	px    spec.Proxmox
	opts  Options
	api   *pveapi.Client
	sem   chan struct{}
	shell HostShell
	log   io.Writer
	// mgmt are the host addresses the API endpoint resolves to: the
	// bridge carrying one of them is never modified.
	mgmt []netip.Addr

	mu sync.Mutex
	// want holds how to build each desired resource, filled by Desired.
	want map[string]*build
	// vmids maps every guest ID on the cluster to its name, owned or not,
	// filled by Observe.
	vmids map[int]guestInfo
	// volumes caches the image storage's content, filled by Observe.
	volumes []volume
	warned  map[string]bool
}

type guestInfo struct {
	Name  string
	Node  string
	Type  string // qemu or lxc
	Owned bool
}

// hintError is an error with a fix-it line; the CLI prints Hint().
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }
func (e *hintError) Hint() string  { return e.hint }

func withHint(err error, hint string) error { return &hintError{err: err, hint: hint} }

// New connects to the API of lab.Host.Proxmox, checks the token, the node
// and the storages, and returns a provider for the lab.
func New(ctx context.Context, lab *spec.Lab, opts Options) (*Provider, error) {
	if lab == nil || lab.Host.Proxmox == nil {
		return nil, withHint(errors.New("the lab has no host.proxmox section"),
			"add host.proxmox with endpoint, node, storage and tokenID (see docs/proxmox.md)")
	}
	px := *lab.Host.Proxmox
	if px.ImageStorage == "" {
		px.ImageStorage = "local"
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	p := &Provider{lab: lab, px: px, opts: opts, log: log, warned: map[string]bool{}}
	if opts.StartTimeout <= 0 {
		p.opts.StartTimeout = 5 * time.Minute
	}
	secret, err := p.tokenSecret()
	if err != nil {
		return nil, err
	}
	hc := opts.HTTPClient
	if hc == nil {
		if opts.Insecure {
			fmt.Fprintf(log, "warning: TLS verification of %s is off (--insecure); anyone on the path can read the API token\n", px.Endpoint)
		}
		tcfg, err := pveapi.TLSConfig(pveapi.TLSOptions{CAFile: px.CAFile, Fingerprint: px.Fingerprint, Insecure: opts.Insecure})
		if err != nil {
			return nil, withHint(fmt.Errorf("setting up TLS for the proxmox API: %w", err),
				"host.proxmox.fingerprint is the SHA-256 shown by `pvenode cert info` on the host; host.proxmox.caFile is a PEM file such as /etc/pve/pve-root-ca.pem")
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tcfg
		tr.ResponseHeaderTimeout = 60 * time.Second
		// Many steps wait on tasks at once: keep their connections (and
		// TLS sessions) instead of opening new ones.
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: tr}
	}
	api, err := pveapi.New(px.Endpoint, px.TokenID, secret, hc)
	if err != nil {
		return nil, withHint(err, "set host.proxmox.endpoint to the API URL, for example https://pve.lan:8006")
	}
	api.Poll = opts.Poll
	p.api = api
	n := opts.Parallel
	if n <= 0 {
		n = 8
	}
	p.sem = make(chan struct{}, n)
	if err := p.checkNode(ctx); err != nil {
		return nil, err
	}
	p.mgmt = managementAddrs(ctx, api.Host())
	p.shell = opts.Shell
	if p.shell == nil && px.SSH != nil {
		sh, err := DialSSH(ctx, *px.SSH, api.Host())
		if err != nil {
			return nil, err
		}
		p.shell = sh
	}
	return p, nil
}

// API returns the API client (tests and benchmarks count its calls).
func (p *Provider) API() *pveapi.Client { return p.api }

// Close releases the SSH connection, if any.
func (p *Provider) Close() error {
	if p.shell != nil && p.opts.Shell == nil {
		return p.shell.Close()
	}
	return nil
}

// tokenSecret reads the secret from Options.Token, TokenFile or TokenEnv.
func (p *Provider) tokenSecret() (string, error) {
	if p.opts.Token != "" {
		return p.opts.Token, nil
	}
	if p.px.TokenID == "" {
		return "", withHint(errors.New("host.proxmox.tokenID is empty"),
			"create an API token (pveum user token add homelab@pve homelab --privsep 0) and set tokenID to homelab@pve!homelab")
	}
	if f := p.px.TokenFile; f != "" {
		st, err := os.Stat(f)
		if err != nil {
			return "", withHint(fmt.Errorf("reading the proxmox token secret: %w", err),
				"write the token's secret (the UUID pveum printed) into that file with mode 0600")
		}
		if st.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(p.log, "warning: token file %s has mode %04o; other users can read the token (chmod 600 %s)\n", f, st.Mode().Perm(), f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("reading the proxmox token secret: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", withHint(fmt.Errorf("the proxmox token file %s is empty", f), "write the token's secret (the UUID pveum printed) into it")
		}
		return s, nil
	}
	if e := p.px.TokenEnv; e != "" {
		s := strings.TrimSpace(os.Getenv(e))
		if s == "" {
			return "", withHint(fmt.Errorf("the environment variable %s that should hold the proxmox token secret is empty", e),
				fmt.Sprintf("export %s=<the token's secret>", e))
		}
		return s, nil
	}
	return "", withHint(errors.New("no proxmox token secret: host.proxmox has neither tokenFile nor tokenEnv"),
		"set host.proxmox.tokenFile to a 0600 file holding the secret, or tokenEnv to the name of a variable holding it")
}

// checkNode verifies the token, the node and the storages.
func (p *Provider) checkNode(ctx context.Context) error {
	var nodes []struct {
		Node   string `json:"node"`
		Status string `json:"status"`
	}
	if err := p.get(ctx, "/nodes", nil, &nodes); err != nil {
		return p.explain(err, "connecting to the proxmox API at "+p.px.Endpoint)
	}
	var names []string
	found := false
	for _, n := range nodes {
		names = append(names, n.Node)
		found = found || n.Node == p.px.Node
	}
	slices.Sort(names)
	if !found {
		return withHint(fmt.Errorf("proxmox node %q not found; the cluster has: %s", p.px.Node, strings.Join(names, ", ")),
			"set host.proxmox.node to the node's name as the web UI's tree shows it (`hostname` on the host)")
	}
	var stores []struct {
		Storage string `json:"storage"`
		Content string `json:"content"`
		Active  int    `json:"active"`
	}
	if err := p.get(ctx, p.nodePath("/storage"), nil, &stores); err != nil {
		return p.explain(err, "listing the storages of node "+p.px.Node)
	}
	content := map[string]string{}
	var snames []string
	for _, s := range stores {
		content[s.Storage] = s.Content
		snames = append(snames, s.Storage)
	}
	slices.Sort(snames)
	need := []struct {
		field, name string
		kinds       []string
	}{
		{"storage", p.px.Storage, []string{"images", "rootdir"}},
		{"imageStorage", p.px.ImageStorage, []string{"import", "vztmpl", "snippets"}},
	}
	for _, n := range need {
		c, ok := content[n.name]
		if !ok {
			return withHint(fmt.Errorf("storage %q (host.proxmox.%s) not found on node %q; it has: %s", n.name, n.field, p.px.Node, strings.Join(snames, ", ")),
				"pick one of those (`pvesm status` on the host lists them)")
		}
		have := strings.Split(c, ",")
		var missing []string
		for _, k := range n.kinds {
			if !slices.Contains(have, k) {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			all := append(slices.Clone(have), missing...)
			return withHint(fmt.Errorf("storage %q (host.proxmox.%s) on node %q does not hold content %s", n.name, n.field, p.px.Node, strings.Join(missing, ", ")),
				fmt.Sprintf("allow it on the host: pvesm set %s --content %s", n.name, strings.Join(all, ",")))
		}
	}
	return nil
}

// explain turns an API error into a message that says what to do.
func (p *Provider) explain(err error, doing string) error {
	var ae *pveapi.Error
	var fe *pveapi.FingerprintError
	switch {
	case errors.As(err, &fe):
		return withHint(fmt.Errorf("%s: %w", doing, err), fe.Hint())
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		user, _, _ := strings.Cut(p.px.TokenID, "!")
		return withHint(fmt.Errorf("%s: the API refused token %q (401 %s)", doing, p.px.TokenID, ae.Message),
			fmt.Sprintf("check the token id and its secret: `pveum user token list %s` on the host lists the tokens; a new one is made with `pveum user token add %s homelab --privsep 0` (see docs/proxmox.md)", user, user))
	case errors.As(err, &ae) && ae.Status == http.StatusForbidden:
		if path, priv, ok := ae.Permission(); ok {
			return withHint(fmt.Errorf("%s: token %q lacks privilege %s on %s", doing, p.px.TokenID, priv, path),
				fmt.Sprintf("grant it, for example: pveum acl modify %s --tokens '%s' --roles HomelabProvisioner (docs/proxmox.md lists the role's privileges)", path, p.px.TokenID))
		}
		return withHint(fmt.Errorf("%s: token %q is not allowed: %s", doing, p.px.TokenID, ae.Message),
			"check the token's permissions (`pveum user token permissions` on the host) against docs/proxmox.md")
	case isTLSError(err):
		return withHint(fmt.Errorf("%s: %w", doing, err),
			"the API's certificate is not trusted: set host.proxmox.caFile to /etc/pve/pve-root-ca.pem (copied from the host) or host.proxmox.fingerprint to the SHA-256 from `pvenode cert info`; --insecure skips the check")
	}
	return fmt.Errorf("%s: %w", doing, err)
}

func isTLSError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "x509:") || strings.Contains(s, "tls: failed to verify")
}

// managementAddrs resolves the API host: the address the management
// connection uses.
func managementAddrs(ctx context.Context, host string) []netip.Addr {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ip := range ips {
		out = append(out, ip.Unmap())
	}
	return out
}

func (p *Provider) nodePath(suffix string) string {
	return "/nodes/" + pveapi.Seg(p.px.Node) + suffix
}

func (p *Provider) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Provider) release() { <-p.sem }

func (p *Provider) get(ctx context.Context, path string, q url.Values, out any) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	return p.api.Get(ctx, path, q, out)
}

func (p *Provider) post(ctx context.Context, path string, form url.Values, out any) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	return p.api.Post(ctx, path, form, out)
}

func (p *Provider) put(ctx context.Context, path string, form url.Values, out any) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	return p.api.Put(ctx, path, form, out)
}

func (p *Provider) del(ctx context.Context, path string, q url.Values, out any) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	return p.api.Delete(ctx, path, q, out)
}

// task runs a call that starts a task (POST or PUT returning a UPID) and
// waits for it, reporting its log lines as progress.
func (p *Provider) task(ctx context.Context, method, path string, form url.Values) error {
	var upid string
	var err error
	if method == http.MethodPut {
		err = p.put(ctx, path, form, &upid)
	} else if method == http.MethodDelete {
		err = p.del(ctx, path, form, &upid)
	} else {
		err = p.post(ctx, path, form, &upid)
	}
	if err != nil {
		return err
	}
	if upid == "" {
		return nil
	}
	return p.api.WaitTask(ctx, upid, nil)
}

func (p *Provider) warnOnce(key, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.warned[key] {
		return
	}
	p.warned[key] = true
	fmt.Fprintf(p.log, "warning: "+format+"\n", args...)
}

package standin

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"

	"github.com/homelab-dev/homelab/internal/lb/proxyproto"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// pki is a lab's CAs with a server certificate for 127.0.0.1 and admin
// client certificates, as the local provider would hand them out.
type pki struct {
	certs               Certs
	talosCAKey          []byte
	talosClient         tls.Certificate
	kubeClient          tls.Certificate
	talosPool, kubePool *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{}
	var err error
	var kubeCAKey []byte
	if p.certs.TalosCA, p.talosCAKey, err = NewCA("talos"); err != nil {
		t.Fatal(err)
	}
	if p.certs.KubeCA, kubeCAKey, err = NewCA("kubernetes"); err != nil {
		t.Fatal(err)
	}
	p.certs.KubeCAKey = kubeCAKey
	if p.certs.TalosCert, p.certs.TalosKey, err = IssueCerts(p.certs.TalosCA, p.talosCAKey, []string{"node"}, []netip.Addr{loopback}); err != nil {
		t.Fatal(err)
	}
	if p.certs.KubeCert, p.certs.KubeKey, err = IssueCerts(p.certs.KubeCA, kubeCAKey, []string{"kubernetes"}, []netip.Addr{loopback}); err != nil {
		t.Fatal(err)
	}
	p.talosClient = clientCert(t, p.certs.TalosCA, p.talosCAKey, "os:admin")
	p.kubeClient = clientCert(t, p.certs.KubeCA, kubeCAKey, "system:masters")
	p.talosPool, p.kubePool = x509.NewCertPool(), x509.NewCertPool()
	p.talosPool.AppendCertsFromPEM(p.certs.TalosCA)
	p.kubePool.AppendCertsFromPEM(p.certs.KubeCA)
	return p
}

func clientCert(t *testing.T, ca, caKey []byte, org string) tls.Certificate {
	t.Helper()
	c, k, err := IssueClientCert(ca, caKey, "admin", org)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// start runs n on loopback with free ports until the test ends.
func start(t *testing.T, n *Node) {
	t.Helper()
	n.AdminAddr, n.AppsAddr, n.EphemeralPorts = loopback, loopback, true
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func addr(t *testing.T, n *Node, s Service) string {
	t.Helper()
	a, ok := n.Addr(s)
	if !ok {
		t.Fatalf("node %s does not serve %s", n.Name, s)
	}
	return a.String()
}

// dialTalos connects with machinery's generated client; cert may be nil
// (talosctl --insecure in maintenance mode still verifies nothing else).
func dialTalos(t *testing.T, n *Node, p *pki, cert *tls.Certificate) machine.MachineServiceClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.talosPool, ServerName: "node"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr(t, n, ServiceTalos), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return machine.NewMachineServiceClient(conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTalosVersionAndUnimplemented(t *testing.T) {
	p := newPKI(t)
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs, TalosVersion: "v1.13.9"}
	start(t, n)
	c := dialTalos(t, n, p, &p.talosClient)

	resp, err := c.Version(ctxT(t), &emptypb.Empty{})
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	v := resp.GetMessages()[0]
	if got, want := v.GetVersion().GetTag(), "v1.13.9-homelab-standin"; got != want {
		t.Errorf("Version tag = %q, want %q", got, want)
	}
	if got := v.GetMetadata().GetHostname(); got != "cp-1" {
		t.Errorf("Version hostname = %q, want cp-1", got)
	}

	_, err = c.Reboot(ctxT(t), &machine.RebootRequest{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "not implemented by the homelab stand-in") {
		t.Errorf("Reboot error = %v, want Unimplemented by the homelab stand-in", err)
	}

	// Configured nodes refuse clients without the talosconfig's certificate.
	_, err = dialTalos(t, n, p, nil).Version(ctxT(t), &emptypb.Empty{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Version without client certificate: error %v, want Unauthenticated", err)
	}
}

func TestMaintenanceApplyBootstrapKubeconfig(t *testing.T) {
	p := newPKI(t)
	stateDir := t.TempDir()
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs, Maintenance: true, StateDir: stateDir}
	start(t, n)
	insecure := dialTalos(t, n, p, nil)
	c := dialTalos(t, n, p, &p.talosClient)

	v, err := insecure.Version(ctxT(t), &emptypb.Empty{})
	if err != nil {
		t.Fatalf("Version in maintenance mode without certificate: %v", err)
	}
	if got := v.GetMessages()[0].GetPlatform().GetMode(); got != "maintenance" {
		t.Errorf("platform mode = %q, want maintenance", got)
	}
	if _, err := insecure.Bootstrap(ctxT(t), &machine.BootstrapRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Bootstrap before config: error %v, want FailedPrecondition", err)
	}
	if _, err := insecure.ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: labConfig(t, labBundle(t), true, "1.36.3")}); err != nil {
		t.Fatalf("ApplyConfiguration: %v", err)
	}
	if _, err := insecure.ServiceList(ctxT(t), &emptypb.Empty{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ServiceList without certificate after config: error %v, want Unauthenticated", err)
	}
	if _, err := c.Bootstrap(ctxT(t), &machine.BootstrapRequest{}); err != nil {
		t.Fatalf("first Bootstrap: %v", err)
	}
	if _, err := c.Bootstrap(ctxT(t), &machine.BootstrapRequest{}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second Bootstrap: error %v, want AlreadyExists", err)
	}
	sl, err := c.ServiceList(ctxT(t), &emptypb.Empty{})
	if err != nil {
		t.Fatalf("ServiceList: %v", err)
	}
	var ids []string
	for _, s := range sl.GetMessages()[0].GetServices() {
		ids = append(ids, s.GetId())
	}
	if !strings.Contains(strings.Join(ids, ","), "etcd") {
		t.Errorf("ServiceList after bootstrap = %v, want etcd among them", ids)
	}

	// machinery's own client unpacks the kubeconfig archive.
	tc, err := talosclient.New(ctxT(t),
		talosclient.WithEndpoints(addr(t, n, ServiceTalos)),
		talosclient.WithTLSConfig(&tls.Config{RootCAs: p.talosPool, ServerName: "node", Certificates: []tls.Certificate{p.talosClient}}))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	kc, err := tc.Kubeconfig(ctxT(t))
	if err != nil {
		t.Fatalf("Kubeconfig: %v", err)
	}
	for _, want := range []string{"kind: Config", "server: https://" + addr(t, n, ServiceKube), "client-certificate-data: "} {
		if !strings.Contains(string(kc), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, kc)
		}
	}

	// The state survives a restart, as on a Talos node's STATE partition.
	n2 := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs, Maintenance: true, StateDir: stateDir}
	start(t, n2)
	if _, err := dialTalos(t, n2, p, &p.talosClient).Bootstrap(ctxT(t), &machine.BootstrapRequest{}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("Bootstrap after restart: error %v, want AlreadyExists", err)
	}
}

func TestWorkerRefusesBootstrap(t *testing.T) {
	p := newPKI(t)
	n := &Node{Name: "w-1", Certs: p.certs}
	start(t, n)
	if _, err := dialTalos(t, n, p, &p.talosClient).Bootstrap(ctxT(t), &machine.BootstrapRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Bootstrap on a worker: error %v, want FailedPrecondition", err)
	}
	if _, ok := n.Addr(ServiceKube); ok {
		t.Error("worker serves the Kubernetes API")
	}
}

func TestKubeAPI(t *testing.T) {
	p := newPKI(t)
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: p.certs, KubernetesVersion: "v1.36.3"}
	start(t, n)
	other := newPKI(t) // a client certificate from a CA the node does not trust

	tests := []struct {
		name     string
		path     string
		cert     *tls.Certificate
		wantCode int // 0: the TLS handshake must fail
		wantBody string
	}{
		{"readyz without certificate", "/readyz", nil, 401, "homelab stand-in"},
		{"readyz with admin certificate", "/readyz", &p.kubeClient, 200, "ok"},
		{"livez with admin certificate", "/livez", &p.kubeClient, 200, "ok"},
		{"version without certificate", "/version", nil, 401, "Unauthorized"},
		{"version", "/version", &p.kubeClient, 200, `"gitVersion": "v1.36.3"`},
		{"readyz with foreign certificate", "/readyz", &other.kubeClient, 0, ""},
		{"unknown path", "/api/v1/namespaces", &p.kubeClient, 404, "homelab stand-in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: p.kubePool, ServerName: "kubernetes"}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
			resp, err := hc.Get("https://" + addr(t, n, ServiceKube) + tt.path)
			if tt.wantCode == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET %s = %s, want a TLS handshake failure", tt.path, resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET %s: %v", tt.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			if tt.path == "/version" && resp.StatusCode == 200 {
				var v map[string]string
				if err := json.Unmarshal(body, &v); err != nil || !strings.Contains(v["homelabStandin"], "stand-in") {
					t.Errorf("/version = %s (%v), want JSON with a homelabStandin marker", body, err)
				}
			}
		})
	}
}

func TestIngressProxyProtocol(t *testing.T) {
	n := &Node{Name: "lab-worker-1"}
	start(t, n)
	client := netip.MustParseAddrPort("192.168.1.50:41234")
	client6 := netip.MustParseAddrPort("[2001:db8::5]:40000")
	dst := netip.MustParseAddrPort("10.10.2.21:30080")

	tests := []struct {
		name   string
		svc    Service
		header []byte
		path   string
		want   []string
	}{
		{"v1", ServiceHTTP, proxyproto.AppendV1(nil, client, dst), "/", []string{"client=192.168.1.50:41234\n", "proxy=v1 via=127.0.0.1:"}},
		{"v2", ServiceHTTP, proxyproto.AppendV2(nil, client, dst), "/", []string{"client=192.168.1.50:41234\n", "proxy=v2"}},
		{"v2 ipv6", ServiceHTTP, proxyproto.AppendV2(nil, client6, netip.MustParseAddrPort("[2001:db8::1]:30080")), "/", []string{"client=[2001:db8::5]:40000\n"}},
		{"v2 over https", ServiceHTTPS, proxyproto.AppendV2(nil, client, dst), "/app", []string{"client=192.168.1.50:41234\n", "path=/app"}},
		{"no header", ServiceHTTP, nil, "/", []string{"client=127.0.0.1:", "proxy=none"}},
		{"v1 unknown", ServiceHTTP, []byte("PROXY UNKNOWN\r\n"), "/", []string{"client=127.0.0.1:", "proxy=v1"}},
		{"healthz", ServiceHTTP, proxyproto.AppendV2(nil, client, dst), "/healthz", []string{"ok (homelab stand-in lab-worker-1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := rawGet(t, addr(t, n, tt.svc), tt.svc == ServiceHTTPS, tt.header, tt.path)
			if code != 200 {
				t.Fatalf("GET %s = %d %q, want 200", tt.path, code, body)
			}
			if tt.path != "/healthz" && !strings.HasPrefix(body, "homelab stand-in worker lab-worker-1 (not a real Talos node)\n") {
				t.Errorf("body = %q, want it to start with the stand-in line", body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("body = %q, want it to contain %q", body, w)
				}
			}
		})
	}

	// A malformed header is refused, not served as the proxy's address.
	conn, err := net.Dial("tcp", addr(t, n, ServiceHTTP))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\nGET / HTTP/1.0\r\n\r\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(conn); strings.Contains(string(b), "client=") {
		t.Errorf("malformed PROXY header answered %q, want the connection closed", b)
	}
}

// rawGet sends header, then an HTTP/1.1 GET of path (over TLS when
// tlsOn), and returns the status code and body.
func rawGet(t *testing.T, address string, tlsOn bool, header []byte, path string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(header); err != nil {
		t.Fatal(err)
	}
	var rw net.Conn = conn
	if tlsOn {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // the ingress's fake certificate
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		rw = tc
	}
	io.WriteString(rw, "GET "+path+" HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(rw), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestIssueCertsFromTalosStyleKeys(t *testing.T) {
	// Talos's OS CA is Ed25519 under a "ED25519 PRIVATE KEY" label.
	tests := []struct{ name, keyLabel string }{
		{"ed25519 talos label", "ED25519 PRIVATE KEY"},
		{"pkcs8 label", "PRIVATE KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, key := ed25519CA(t, tt.keyLabel)
			cert, _, err := IssueCerts(ca, key, []string{"n"}, []netip.Addr{loopback})
			if err != nil {
				t.Fatalf("IssueCerts: %v", err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			c, err := parseCert(cert)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
				t.Errorf("issued certificate does not verify: %v", err)
			}
			if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
				t.Errorf("IP SANs = %v, want [127.0.0.1]", c.IPAddresses)
			}
		})
	}
	if _, _, err := IssueCerts([]byte("x"), []byte("y"), nil, nil); err == nil {
		t.Error("IssueCerts with garbage CA: no error")
	}
}

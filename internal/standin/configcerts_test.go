package standin

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	"github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/encoder"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	talossecrets "github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	mtype "github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/role"
)

var (
	bundleOnce   sync.Once
	bundleShared *talossecrets.Bundle
	bundleErr    error
)

// labBundle is a real Talos secrets bundle, made once per test binary.
func labBundle(t *testing.T) *talossecrets.Bundle {
	t.Helper()
	bundleOnce.Do(func() {
		bundleShared, bundleErr = talossecrets.NewBundle(talossecrets.NewClock(), config.TalosVersionCurrent)
	})
	if bundleErr != nil {
		t.Fatal(bundleErr)
	}
	return bundleShared
}

// labInstaller is the install image of labConfig: the Image Factory
// installer of the reference lab's schematic (siderolabs/qemu-guest-agent),
// see schematicQemuGuestAgent.
const labInstaller = "factory.talos.dev/installer/" + schematicQemuGuestAgent + ":v1.13.9"

// labConfig renders a machine config with machinery's generator from the
// bundle, for Kubernetes version k8s (no leading v).
func labConfig(t *testing.T, b *talossecrets.Bundle, cp bool, k8s string) []byte {
	t.Helper()
	in, err := generate.NewInput("lab", "https://127.0.0.1:6443", k8s,
		generate.WithSecretsBundle(b),
		generate.WithAdditionalSubjectAltNames([]string{"10.99.0.1"}),
		generate.WithInstallImage(labInstaller))
	if err != nil {
		t.Fatal(err)
	}
	typ := mtype.TypeWorker
	if cp {
		typ = mtype.TypeControlPlane
	}
	p, err := in.Config(typ)
	if err != nil {
		t.Fatal(err)
	}
	data, err := p.EncodeBytes(encoder.WithComments(encoder.CommentsDisabled))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// labClients are the lab's own clients: the talosconfig's (OS CA, admin
// certificate) and nothing else.
func labClients(t *testing.T, b *talossecrets.Bundle) *pki {
	t.Helper()
	admin, err := talossecrets.NewAdminCertificateAndKey(time.Now(), b.Certs.OS, role.MakeSet(role.Admin), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(admin.Crt, admin.Key)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{talosClient: kp, talosPool: x509.NewCertPool(), kubePool: x509.NewCertPool()}
	p.talosPool.AppendCertsFromPEM(b.Certs.OS.Crt)
	p.kubePool.AppendCertsFromPEM(b.Certs.K8s.Crt)
	return p
}

// labTalos is a client as the lab's talosconfig makes one.
func labTalos(t *testing.T, n *Node, p *pki) machine.MachineServiceClient {
	t.Helper()
	c, err := talosclient.New(ctxT(t),
		talosclient.WithEndpoints(addr(t, n, ServiceTalos)),
		talosclient.WithTLSConfig(&tls.Config{RootCAs: p.talosPool, Certificates: []tls.Certificate{p.talosClient}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.MachineClient
}

// verifiedVersion calls Version verifying the node against the lab's
// Talos CA with the talosconfig's certificate, as talosctl does.
func verifiedVersion(t *testing.T, n *Node, p *pki) error {
	t.Helper()
	c, err := talosclient.New(ctxT(t),
		talosclient.WithEndpoints(addr(t, n, ServiceTalos)),
		talosclient.WithTLSConfig(&tls.Config{RootCAs: p.talosPool, Certificates: []tls.Certificate{p.talosClient}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Version(ctxT(t))
	return err
}

// A stand-in started without certificates serves an ephemeral one in
// maintenance mode and, once configured, certificates issued from the
// applied config's machine.ca and cluster.ca: the lab's talosconfig and
// kubeconfig verify it then, and it keeps them across a restart.
func TestConfiguredPresentsLabCerts(t *testing.T) {
	b := labBundle(t)
	p := labClients(t, b)
	stateDir := t.TempDir()
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Maintenance: true, StateDir: stateDir}
	start(t, n)

	// Maintenance: the lab's CA does not verify the ephemeral cert;
	// talosctl --insecure talks to it.
	err := verifiedVersion(t, n, p)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Version verified against the lab's CA in maintenance mode = %v, want a certificate error", err)
	}
	insecure := dialInsecure(t, n)
	if _, err := insecure.Version(ctxT(t), &emptypb.Empty{}); err != nil {
		t.Fatalf("insecure Version in maintenance mode: %v", err)
	}
	cfg := labConfig(t, b, true, "1.36.3")
	if _, err := insecure.ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: cfg, Mode: machine.ApplyConfigurationRequest_AUTO}); err != nil {
		t.Fatalf("ApplyConfiguration: %v", err)
	}

	// Configured: the same listener now presents machine.ca's cert.
	if err := verifiedVersion(t, n, p); err != nil {
		t.Fatalf("Version with the lab's talosconfig after apply: %v", err)
	}
	if _, err := dialInsecure(t, n).ServiceList(ctxT(t), &emptypb.Empty{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ServiceList without a certificate after apply = %v, want Unauthenticated", err)
	}
	if _, err := labTalos(t, n, p).Bootstrap(ctxT(t), &machine.BootstrapRequest{}); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}

	// The kubeconfig it hands out is signed by cluster.ca, and the
	// Kubernetes API serves a cluster.ca cert checked against it.
	hc := kubeClientFromNode(t, n, p)
	resp, err := hc.Get("https://" + addr(t, n, ServiceKube) + "/version")
	if err != nil {
		t.Fatalf("GET /version with the issued kubeconfig: %v", err)
	}
	var v kubeVersion
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != 200 || v.GitVersion != "v1.36.3" {
		t.Errorf("GET /version = %s %+v, want 200 v1.36.3 (the config's kube-apiserver tag)", resp.Status, v)
	}

	// After a restart the stored config's certificates serve at once.
	n2 := &Node{Name: "cp-1", Role: RoleControlPlane, Maintenance: true, StateDir: stateDir}
	start(t, n2)
	if err := verifiedVersion(t, n2, p); err != nil {
		t.Errorf("Version with the lab's talosconfig after a restart: %v", err)
	}
}

// kubeClientFromNode fetches the node's kubeconfig and builds an HTTP
// client from it, verifying the server against the lab's cluster CA.
func kubeClientFromNode(t *testing.T, n *Node, p *pki) *http.Client {
	t.Helper()
	c, err := talosclient.New(ctxT(t),
		talosclient.WithEndpoints(addr(t, n, ServiceTalos)),
		talosclient.WithTLSConfig(&tls.Config{RootCAs: p.talosPool, Certificates: []tls.Certificate{p.talosClient}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kc, err := c.Kubeconfig(ctxT(t))
	if err != nil {
		t.Fatalf("Kubeconfig: %v", err)
	}
	field := func(key string) []byte {
		for line := range strings.Lines(string(kc)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+": "); ok {
				d, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					t.Fatalf("kubeconfig %s: %v", key, err)
				}
				return d
			}
		}
		t.Fatalf("kubeconfig has no %s", key)
		return nil
	}
	kp, err := tls.X509KeyPair(field("client-certificate-data"), field("client-key-data"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(kp.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.kubePool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the kubeconfig's client certificate is not signed by the lab's cluster CA: %v", err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.kubePool, Certificates: []tls.Certificate{kp},
	}}}
}

func TestApplyRejectsBadConfigs(t *testing.T) {
	b := labBundle(t)
	worker := labConfig(t, b, false, "1.36.3")
	tests := []struct {
		name string
		role Role
		data []byte
		want string
	}{
		{"not a config", RoleWorker, []byte("version: v1alpha1\n"), "does not load"},
		{"unknown field", RoleWorker, append([]byte("extraField: 1\n"), worker...), "does not load"},
		{"worker config on a control plane", RoleControlPlane, worker, "machine.ca certificate and key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{Name: "n", Role: tt.role, Maintenance: true}
			start(t, n)
			_, err := dialInsecure(t, n).ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: tt.data})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ApplyConfiguration = %v, want InvalidArgument with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error quotes key material: %v", err)
			}
			// Still in maintenance mode.
			v, err := dialInsecure(t, n).Version(ctxT(t), &emptypb.Empty{})
			if err != nil || v.GetMessages()[0].GetPlatform().GetMode() != "maintenance" {
				t.Errorf("after a refused config: Version = %v, %v; want maintenance mode", v, err)
			}
		})
	}
}

// dialInsecure is talosctl --insecure: no client certificate, the
// server's certificate not verified.
func dialInsecure(t *testing.T, n *Node) machine.MachineServiceClient {
	t.Helper()
	c, err := talosclient.New(ctxT(t),
		talosclient.WithEndpoints(addr(t, n, ServiceTalos)),
		talosclient.WithTLSConfig(&tls.Config{InsecureSkipVerify: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.MachineClient
}

// A worker's config holds machine.ca without its key: the worker gets
// its Talos API certificate from the control plane's trustd, with
// machine.token, as on Talos; until then the lab's CA does not verify it.
func TestWorkerCertifiedByTrustd(t *testing.T) {
	b := labBundle(t)
	p := labClients(t, b)
	cp := &Node{Name: "cp-1", Role: RoleControlPlane, Maintenance: true}
	start(t, cp)
	w := &Node{Name: "w-1", Role: RoleWorker, Maintenance: true, StateDir: t.TempDir(),
		TrustdEndpoints: []string{addr(t, cp, ServiceTrustd)}}
	start(t, w)

	if _, err := dialInsecure(t, w).ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: labConfig(t, b, false, "1.36.3")}); err != nil {
		t.Fatalf("ApplyConfiguration on the worker: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := verifiedVersion(t, w, p); err == nil {
		t.Fatal("the worker is verified by the lab's CA before any trustd could sign its certificate")
	}
	if _, err := dialInsecure(t, cp).ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: labConfig(t, b, true, "1.36.3")}); err != nil {
		t.Fatalf("ApplyConfiguration on the control plane: %v", err)
	}
	waitVerified(t, w, p)
	var kinds []string
	for _, e := range w.Events() {
		kinds = append(kinds, e.Kind)
	}
	// healthy: back from the apply's reboot (the default mode)
	if got := strings.Join(kinds, ","); got != "configured,healthy,certified" {
		t.Errorf("worker events = %s, want configured,healthy,certified", got)
	}

	// Wrong token: refused.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.Certs.OS.Crt)
	if _, err := askTrustd(addr(t, cp, ServiceTrustd), pool, "wrong.token", []byte("x")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("trustd with a wrong token = %v, want PermissionDenied", err)
	}

	// After a restart the worker asks again.
	w2 := &Node{Name: "w-1", Role: RoleWorker, StateDir: w.StateDir, TrustdEndpoints: w.TrustdEndpoints}
	start(t, w2)
	waitVerified(t, w2, p)
}

func waitVerified(t *testing.T, n *Node, p *pki) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := verifiedVersion(t, n, p)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not verified by the lab's talosconfig within 5s: %v", n.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The Talos version a node was configured at stays across restarts with
// another TalosVersion, as an installed disk keeps it, until an upgrade.
func TestInstalledVersionSticks(t *testing.T) {
	b := labBundle(t)
	p := labClients(t, b)
	dir := t.TempDir()
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Maintenance: true, StateDir: dir, TalosVersion: "v1.13.9"}
	start(t, n)
	if _, err := dialInsecure(t, n).ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: labConfig(t, b, true, "1.36.3")}); err != nil {
		t.Fatal(err)
	}
	n.Close()
	n2 := &Node{Name: "cp-1", Role: RoleControlPlane, Maintenance: true, StateDir: dir, TalosVersion: "v1.13.10"}
	start(t, n2)
	c := labTalos(t, n2, p)
	v, err := c.Version(ctxT(t), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.GetMessages()[0].GetVersion().GetTag(); got != VersionTag("v1.13.9") {
		t.Errorf("after a restart with TalosVersion v1.13.10: tag %s, want the installed v1.13.9", got)
	}
	if got := n2.InstalledImage(); got != labInstaller || n2.ConfiguredInstallImage() != labInstaller {
		t.Errorf("after a restart: installed %q, configured %q; want both %q", got, n2.ConfiguredInstallImage(), labInstaller)
	}
	// The rollout (bootstrap.Flow.Upgrade) calls MachineService.Upgrade,
	// deprecated for LifecycleService but still served by Talos 1.13.
	//lint:ignore SA1019 what the rollout calls
	if _, err := c.Upgrade(ctxT(t), &machine.UpgradeRequest{Image: "factory.talos.dev/installer/abc:v1.13.10", Preserve: true}); err != nil {
		t.Fatal(err)
	}
	v, err = c.Version(ctxT(t), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.GetMessages()[0].GetVersion().GetTag(); got != VersionTag("v1.13.10") || n2.UpgradeImage() != "factory.talos.dev/installer/abc:v1.13.10" {
		t.Errorf("after Upgrade: tag %s, image %s", got, n2.UpgradeImage())
	}
	// abc is no factory schematic: the installed system's extensions
	// (the lab's schematic) are gone, and the event says so.
	var got string
	for _, e := range n2.Events() {
		if e.Kind == EventUpgraded {
			got = e.Detail
		}
	}
	want := `factory.talos.dev/installer/abc:v1.13.10 (schematic changed from "` + schematicQemuGuestAgent + `" to "": the extensions of the installed system are replaced)`
	if got != want {
		t.Errorf("upgraded event after an upgrade dropping the schematic = %q, want %q", got, want)
	}
	if n2.InstalledImage() != "factory.talos.dev/installer/abc:v1.13.10" {
		t.Errorf("installed image after the upgrade = %q, want the upgrade's", n2.InstalledImage())
	}
	//lint:ignore SA1019 see above
	if _, err := c.Upgrade(ctxT(t), &machine.UpgradeRequest{Image: "factory.talos.dev/installer/abc:latest"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Upgrade to an image without a version tag = %v, want InvalidArgument", err)
	}
}

// A node back from an upgrade's reboot records a healthy event stamped
// with the end of the reboot (after its upgraded event by RebootDelay);
// one told to fail upgrades comes back unhealthy and records none. (The
// first apply, in reboot mode, has its own healthy event.)
func TestHealthyEventAfterUpgrade(t *testing.T) {
	const reboot = 150 * time.Millisecond
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			b := labBundle(t)
			p := labClients(t, b)
			n := &Node{Name: "cp-1", Role: RoleControlPlane, Maintenance: true, RebootDelay: reboot, FailUpgrades: fail}
			start(t, n)
			if _, err := dialInsecure(t, n).ApplyConfiguration(ctxT(t), &machine.ApplyConfigurationRequest{Data: labConfig(t, b, true, "1.36.3")}); err != nil {
				t.Fatal(err)
			}
			waitVerified(t, n, p)
			c := labTalos(t, n, p)
			//lint:ignore SA1019 what the rollout calls (see TestInstalledVersionSticks)
			if _, err := c.Upgrade(ctxT(t), &machine.UpgradeRequest{Image: "factory.talos.dev/installer/" + schematicQemuGuestAgent + ":v1.13.10", Preserve: true}); err != nil {
				t.Fatal(err)
			}
			if e := n.Events(); e[len(e)-1].Kind != EventUpgraded {
				t.Fatalf("events during the reboot = %+v, want upgraded last (not healthy yet)", e)
			}
			time.Sleep(reboot + 50*time.Millisecond)
			var kinds []string
			var upgraded, healthy time.Time
			for _, e := range n.Events() {
				kinds = append(kinds, e.Kind)
				switch e.Kind {
				case EventUpgraded:
					upgraded = e.Time
					if !strings.HasSuffix(e.Detail, "(schematic kept)") {
						t.Errorf("upgraded event %q, want the schematic kept", e.Detail)
					}
				case EventHealthy:
					if !upgraded.IsZero() { // not the apply's reboot
						healthy = e.Time
					}
				}
			}
			switch {
			case fail && !healthy.IsZero():
				t.Errorf("a node failing its upgrade recorded healthy (events %v)", kinds)
			case !fail && healthy.Sub(upgraded) < reboot:
				t.Errorf("events %v: upgraded at %v, healthy at %v; want healthy %s later", kinds, upgraded, healthy, reboot)
			case !fail && kinds[len(kinds)-1] != EventHealthy:
				t.Errorf("events %v, want healthy last", kinds)
			}
		})
	}
}

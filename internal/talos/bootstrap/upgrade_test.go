package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/siderolabs/talos/pkg/machinery/api/common"
	"github.com/siderolabs/talos/pkg/machinery/api/machine"

	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/standin"
	"github.com/homelab-dev/homelab/internal/talos"
)

// events is the shared, ordered log of what the fake nodes saw.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	e.list = append(e.list, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.list, "\n")
}

// upgradeNode is a fake Talos node that logs every step of an upgrade
// in one shared, ordered list (the stand-in tests, in
// standin_upgrade_test.go, check the same rollouts by the stand-ins'
// timestamps). After Upgrade it "reboots" (Unavailable) for a
// while and comes back at the image's tag, unless broken.
type upgradeNode struct {
	machine.UnimplementedMachineServiceServer
	name    string
	cp      bool
	broken  bool
	ev      *events
	mu      sync.Mutex
	version string
	down    time.Time // answering Unavailable until then
	pending bool      // upgraded, not yet seen back
	checked bool      // services listed since coming back
}

func (u *upgradeNode) Version(context.Context, *emptypb.Empty) (*machine.VersionResponse, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Now().Before(u.down) || (u.broken && u.pending) {
		return nil, status.Error(codes.Unavailable, "rebooting")
	}
	if u.pending {
		u.pending = false
		u.checked = false
		u.ev.add("back %s %s", u.name, u.version)
	}
	return &machine.VersionResponse{Messages: []*machine.Version{{
		Metadata: &common.Metadata{Hostname: u.name},
		Version:  &machine.VersionInfo{Tag: u.version},
	}}}, nil
}

func (u *upgradeNode) ServiceList(context.Context, *emptypb.Empty) (*machine.ServiceListResponse, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.checked {
		u.checked = true
		u.ev.add("services %s", u.name)
	}
	ids := []string{"apid", "containerd", "cri", "kubelet"}
	if u.cp {
		ids = append(ids, "etcd")
	}
	l := &machine.ServiceList{}
	for _, id := range ids {
		l.Services = append(l.Services, &machine.ServiceInfo{Id: id, State: "Running", Health: &machine.ServiceHealth{Healthy: true}})
	}
	return &machine.ServiceListResponse{Messages: []*machine.ServiceList{l}}, nil
}

func (u *upgradeNode) Upgrade(_ context.Context, req *machine.UpgradeRequest) (*machine.UpgradeResponse, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ev.add("upgrade %s %s preserve=%v", u.name, req.GetImage(), req.GetPreserve())
	_, tag, _ := strings.Cut(req.GetImage()[strings.LastIndex(req.GetImage(), "/"):], ":")
	u.version = tag
	u.down = time.Now().Add(150 * time.Millisecond)
	u.pending = true
	return &machine.UpgradeResponse{Messages: []*machine.Upgrade{{Ack: "upgrade started"}}}, nil
}

// upgradeLab serves three fake nodes at v1.13.9 over TLS, requiring the
// lab's admin client certificate.
func upgradeLab(t *testing.T, broken string) (*Flow, *events) {
	t.Helper()
	pki := newPKI(t)
	osCA := pki.b.Certs.OS
	crt, key, err := standin.IssueCerts(osCA.Crt, osCA.Key, []string{"node"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := tls.X509KeyPair(crt, key)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(osCA.Crt)
	ev := &events{}
	f := &Flow{
		TalosCA: osCA.Crt, AdminCert: pki.crt, AdminKey: pki.key, Store: &memStore{},
		NodeTimeout: 2 * time.Second, PollInterval: 30 * time.Millisecond, CallTimeout: 5 * time.Second,
	}
	for _, n := range []struct {
		name string
		cp   bool
	}{{"lab-cp-1", true}, {"lab-worker-1", false}, {"lab-worker-2", false}} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{kp}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		})))
		machine.RegisterMachineServiceServer(srv, &upgradeNode{name: n.name, cp: n.cp, broken: n.name == broken, ev: ev, version: "v1.13.9"})
		go srv.Serve(l)
		t.Cleanup(srv.Stop)
		f.Nodes = append(f.Nodes, Node{Name: n.name, ControlPlane: n.cp, Addr: l.Addr().String()})
	}
	return f, ev
}

// installer is the reference lab's installer image at v1.13.10: the
// Image Factory schematic of the lab in the path.
func installer(t *testing.T) (image, schematicID string) {
	t.Helper()
	lab, _, err := spec.Parse("lab.yaml", spec.Reference(spec.ProviderLocal))
	if err != nil {
		t.Fatal(err)
	}
	lab.Cluster.TalosVersion = "v1.13.10"
	_, id, err := talos.Schematic(lab)
	if err != nil {
		t.Fatal(err)
	}
	if id != testSchematic {
		t.Fatalf("the reference lab's schematic is %s, want %s (its extensions would change at the next upgrade)", id, testSchematic)
	}
	return talos.InstallerImage(lab, id), id
}

func TestUpgradeOneAtATime(t *testing.T) {
	f, ev := upgradeLab(t, "")
	image, _ := installer(t)
	if want := "factory.talos.dev/installer/" + testSchematic + ":v1.13.10"; image != want {
		t.Fatalf("installer image %s, want %s", image, want)
	}
	res, err := f.Upgrade(context.Background(), image, "v1.13.10", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range []string{"lab-cp-1", "lab-worker-1", "lab-worker-2"} {
		want = append(want,
			"upgrade "+n+" "+image+" preserve=true", // the schematic kept, data kept
			"back "+n+" v1.13.10",
			"services "+n, // health checked before the next node starts
		)
	}
	if got := ev.String(); got != strings.Join(want, "\n") {
		t.Errorf("rollout:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if strings.Join(res.Upgraded, ",") != "lab-cp-1,lab-worker-1,lab-worker-2" || len(res.Current) != 0 {
		t.Errorf("result = %+v", res)
	}

	// Again: everything is current, nothing is upgraded.
	ev.mu.Lock()
	ev.list = nil
	ev.mu.Unlock()
	res, err = f.Upgrade(context.Background(), image, "v1.13.10", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Upgraded) != 0 || len(res.Current) != 3 || strings.Contains(ev.String(), "upgrade") {
		t.Errorf("second rollout upgraded %v (events %q), want nothing", res.Upgraded, ev.String())
	}
}

func TestUpgradeStopsAtFailedNode(t *testing.T) {
	f, ev := upgradeLab(t, "lab-worker-1")
	image, _ := installer(t)
	start := time.Now()
	res, err := f.Upgrade(context.Background(), image, "v1.13.10", nil)
	if err == nil {
		t.Fatal("rollout with a node that never comes back succeeded")
	}
	for _, want := range []string{"rollout stopped (lab-worker-2 not upgraded)", "node lab-worker-1", "not back at v1.13.10 and healthy within 2s", "rebooting"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(ev.String(), "upgrade lab-worker-2") {
		t.Errorf("lab-worker-2 was upgraded after lab-worker-1 failed:\n%s", ev)
	}
	if strings.Join(res.Upgraded, ",") != "lab-cp-1" || strings.Join(res.Remaining, ",") != "lab-worker-2" {
		t.Errorf("result = %+v, want cp-1 upgraded and worker-2 remaining", res)
	}
	if time.Since(start) > 8*time.Second {
		t.Errorf("rollout took %s with a 2s node bound", time.Since(start))
	}
}

func TestUpgradeRefusesMismatchedImage(t *testing.T) {
	f, ev := upgradeLab(t, "")
	if _, err := f.Upgrade(context.Background(), "factory.talos.dev/installer/abc:v1.13.9", "v1.13.10", nil); err == nil {
		t.Error("Upgrade with an image of another version succeeded")
	}
	if ev.String() != "" {
		t.Errorf("nodes were called: %s", ev)
	}
}

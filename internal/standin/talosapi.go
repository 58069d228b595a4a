package standin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/siderolabs/talos/pkg/machinery/api/common"
	"github.com/siderolabs/talos/pkg/machinery/api/machine"
)

// maxConfigSize bounds an applied machine config (real ones are ~30 KiB).
const maxConfigSize = 4 << 20

// talosAPI implements the part of Talos's MachineService that the lab
// uses; everything else answers Unimplemented.
type talosAPI struct {
	machine.UnimplementedMachineServiceServer
	n *Node
}

func (n *Node) newTalosServer() (*grpc.Server, error) {
	// Clients without a certificate are let through the handshake so
	// that maintenance mode works; authorize refuses them afterwards.
	cfg, err := serverTLS(n.Certs.TalosCert, n.Certs.TalosKey, n.Certs.TalosCA, tls.VerifyClientCertIfGiven)
	if err != nil {
		return nil, fmt.Errorf("talos API: %w", err)
	}
	api := &talosAPI{n: n}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cfg)),
		grpc.MaxRecvMsgSize(maxConfigSize+1024),
		grpc.ChainUnaryInterceptor(api.unary),
		grpc.ChainStreamInterceptor(api.stream),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			m, _ := grpc.MethodFromServerStream(stream)
			return notImplemented(m)
		}),
	)
	machine.RegisterMachineServiceServer(srv, api)
	return srv, nil
}

func notImplemented(method string) error {
	return status.Errorf(codes.Unimplemented, "%s: not implemented by the %s (not a real Talos node)", method, Marker)
}

// authorize refuses clients without a verified certificate once the node
// has left maintenance mode, as apid does.
func (a *talosAPI) authorize(ctx context.Context) error {
	a.n.mu.Lock()
	configured := a.n.state.Configured
	a.n.mu.Unlock()
	if !configured {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "a client certificate signed by the Talos CA is required (use the lab's talosconfig)")
}

// fixUnimplemented rewrites the generated "method X not implemented".
func fixUnimplemented(method string, err error) error {
	if status.Code(err) == codes.Unimplemented && strings.HasPrefix(status.Convert(err).Message(), "method ") {
		return notImplemented(method)
	}
	return err
}

func (a *talosAPI) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	if err != nil {
		a.n.log().Info(Marker+" talos API call", "method", info.FullMethod, "code", status.Code(err).String())
	} else {
		a.n.log().Info(Marker+" talos API call", "method", info.FullMethod)
	}
	return resp, fixUnimplemented(info.FullMethod, err)
}

func (a *talosAPI) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.authorize(ss.Context()); err != nil {
		return err
	}
	a.n.log().Info(Marker+" talos API stream", "method", info.FullMethod)
	return fixUnimplemented(info.FullMethod, handler(srv, ss))
}

func (a *talosAPI) meta() *common.Metadata {
	return &common.Metadata{Hostname: a.n.Name}
}

// VersionTag is the tag a stand-in reports for a Talos version.
func VersionTag(talosVersion string) string { return talosVersion + "-homelab-standin" }

// Version reports the Talos version with a tag that says stand-in.
func (a *talosAPI) Version(context.Context, *emptypb.Empty) (*machine.VersionResponse, error) {
	a.n.mu.Lock()
	mode := "metal"
	if !a.n.state.Configured {
		mode = "maintenance"
	}
	a.n.mu.Unlock()
	return &machine.VersionResponse{Messages: []*machine.Version{{
		Metadata: a.meta(),
		Version: &machine.VersionInfo{
			Tag:       VersionTag(a.n.talosVersion()),
			Sha:       "homelab-standin",
			Built:     "not a real Talos node: " + Marker,
			GoVersion: runtime.Version(),
			Os:        runtime.GOOS,
			Arch:      runtime.GOARCH,
		},
		Platform: &machine.PlatformInfo{Name: "homelab-standin", Mode: mode},
		Features: &machine.FeaturesInfo{Rbac: true},
	}}}, nil
}

// ApplyConfiguration stores the config and leaves maintenance mode.
func (a *talosAPI) ApplyConfiguration(_ context.Context, req *machine.ApplyConfigurationRequest) (*machine.ApplyConfigurationResponse, error) {
	if len(req.GetData()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "machine configuration is empty")
	}
	if len(req.GetData()) > maxConfigSize {
		return nil, status.Errorf(codes.InvalidArgument, "machine configuration is larger than %d MiB", maxConfigSize>>20)
	}
	mode := req.GetMode()
	if req.GetDryRun() {
		return &machine.ApplyConfigurationResponse{Messages: []*machine.ApplyConfiguration{{
			Metadata: a.meta(), Mode: mode,
			ModeDetails: "Dry run: the " + Marker + " would store this configuration",
		}}}, nil
	}
	a.n.mu.Lock()
	defer a.n.mu.Unlock()
	prev, prevCfg := a.n.state, a.n.config
	a.n.config = bytes.Clone(req.GetData())
	a.n.state.Configured = true
	if err := a.n.saveState(); err != nil {
		a.n.state, a.n.config = prev, prevCfg
		return nil, status.Errorf(codes.Internal, "storing the machine configuration: %v", err)
	}
	return &machine.ApplyConfigurationResponse{Messages: []*machine.ApplyConfiguration{{
		Metadata:    a.meta(),
		Mode:        mode,
		ModeDetails: fmt.Sprintf("Applied configuration with a %s mode (%s: stored, nothing rebooted)", mode, Marker),
	}}}, nil
}

// Bootstrap succeeds once per control plane, after a configuration.
func (a *talosAPI) Bootstrap(context.Context, *machine.BootstrapRequest) (*machine.BootstrapResponse, error) {
	a.n.mu.Lock()
	defer a.n.mu.Unlock()
	switch {
	case a.n.role() != RoleControlPlane:
		return nil, status.Error(codes.FailedPrecondition, "bootstrap is only possible on a control plane node")
	case !a.n.state.Configured:
		return nil, status.Error(codes.FailedPrecondition, "bootstrap is not available yet")
	case a.n.state.Bootstrapped:
		// What Talos answers when etcd already holds data.
		return nil, status.Error(codes.AlreadyExists, "etcd data directory is not empty")
	}
	a.n.state.Bootstrapped = true
	if err := a.n.saveState(); err != nil {
		a.n.state.Bootstrapped = false
		return nil, status.Errorf(codes.Internal, "storing the bootstrap: %v", err)
	}
	a.n.log().Info(Marker + " bootstrapped (no etcd runs here)")
	return &machine.BootstrapResponse{Messages: []*machine.Bootstrap{{Metadata: a.meta()}}}, nil
}

// ServiceList reports the services a node of this role and state runs.
func (a *talosAPI) ServiceList(context.Context, *emptypb.Empty) (*machine.ServiceListResponse, error) {
	a.n.mu.Lock()
	st := a.n.state
	a.n.mu.Unlock()
	ids := []string{"apid", "machined"}
	if st.Configured {
		ids = append(ids, "containerd", "cri", "kubelet", "trustd")
	}
	if st.Bootstrapped {
		ids = append(ids, "etcd")
	}
	now := timestamppb.Now()
	list := &machine.ServiceList{Metadata: a.meta()}
	for _, id := range ids {
		list.Services = append(list.Services, &machine.ServiceInfo{
			Id:    id,
			State: "Running",
			Events: &machine.ServiceEvents{Events: []*machine.ServiceEvent{{
				Msg: "simulated by the " + Marker, State: "Running", Ts: now,
			}}},
			Health: &machine.ServiceHealth{Healthy: true, LastMessage: Marker, LastChange: now},
		})
	}
	return &machine.ServiceListResponse{Messages: []*machine.ServiceList{list}}, nil
}

// EtcdMemberList reports this control plane as the only member once
// bootstrapped.
func (a *talosAPI) EtcdMemberList(context.Context, *machine.EtcdMemberListRequest) (*machine.EtcdMemberListResponse, error) {
	a.n.mu.Lock()
	st := a.n.state
	a.n.mu.Unlock()
	if a.n.role() != RoleControlPlane || !st.Bootstrapped {
		return nil, status.Error(codes.FailedPrecondition, "etcd is not running on this node")
	}
	host := "127.0.0.1"
	if a.n.AdminAddr.IsValid() {
		host = a.n.AdminAddr.String()
	}
	return &machine.EtcdMemberListResponse{Messages: []*machine.EtcdMembers{{
		Metadata: a.meta(),
		Members: []*machine.EtcdMember{{
			Id:         1,
			Hostname:   a.n.Name,
			PeerUrls:   []string{"https://" + host + ":2380"},
			ClientUrls: []string{"https://" + host + ":2379"},
		}},
	}}}, nil
}

// Kubeconfig streams a .tar.gz holding one file, kubeconfig, as Talos
// does: an admin client certificate signed by the Kubernetes CA.
func (a *talosAPI) Kubeconfig(_ *emptypb.Empty, stream grpc.ServerStreamingServer[common.Data]) error {
	a.n.mu.Lock()
	configured := a.n.state.Configured
	a.n.mu.Unlock()
	switch {
	case a.n.role() != RoleControlPlane:
		return status.Error(codes.FailedPrecondition, "kubeconfig is only available on control plane nodes")
	case !configured:
		return status.Error(codes.FailedPrecondition, "the node has no machine configuration yet")
	case len(a.n.Certs.KubeCAKey) == 0:
		return status.Errorf(codes.FailedPrecondition, "this %s was started without the Kubernetes CA key, so it cannot issue a kubeconfig", Marker)
	}
	kc, err := a.n.kubeconfig()
	if err != nil {
		return status.Errorf(codes.Internal, "generating kubeconfig: %v", err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: "kubeconfig", Mode: 0o600, Size: int64(len(kc)), ModTime: time.Now()}); err != nil {
		return status.Errorf(codes.Internal, "packing kubeconfig: %v", err)
	}
	tw.Write(kc)
	tw.Close()
	gz.Close()
	return stream.Send(&common.Data{Metadata: a.meta(), Bytes: buf.Bytes()})
}

var kubeconfigTmpl = template.Must(template.New("kubeconfig").Parse(`# kubeconfig issued by the {{.Marker}} {{.Node}} (not a real Talos node)
apiVersion: v1
kind: Config
clusters:
- name: {{.Cluster}}
  cluster:
    server: {{.Server}}
    certificate-authority-data: {{.CA}}
users:
- name: admin@{{.Cluster}}
  user:
    client-certificate-data: {{.Cert}}
    client-key-data: {{.Key}}
contexts:
- name: admin@{{.Cluster}}
  context:
    cluster: {{.Cluster}}
    namespace: default
    user: admin@{{.Cluster}}
current-context: admin@{{.Cluster}}
`))

func (n *Node) kubeconfig() ([]byte, error) {
	cert, key, err := IssueClientCert(n.Certs.KubeCA, n.Certs.KubeCAKey, "admin", "system:masters")
	if err != nil {
		return nil, err
	}
	cluster := n.ClusterName
	if cluster == "" {
		cluster = "homelab"
	}
	server := n.Endpoint
	if server == "" {
		a, _ := n.Addr(ServiceKube)
		host := n.AdminAddr
		if !host.IsValid() {
			host = netip.MustParseAddr("127.0.0.1")
		}
		server = "https://" + netip.AddrPortFrom(host, a.Port()).String()
	}
	var b bytes.Buffer
	err = kubeconfigTmpl.Execute(&b, map[string]string{
		"Marker": Marker, "Node": n.Name, "Cluster": cluster, "Server": server,
		"CA": b64(n.Certs.KubeCA), "Cert": b64(cert), "Key": b64(key),
	})
	return b.Bytes(), err
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

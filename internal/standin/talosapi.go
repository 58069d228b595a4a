package standin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
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
	// The certificate is read per handshake: it changes when a config
	// is applied (see adopt).
	cfg := dynamicTLS(n.talosTLS.Load)
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
	a.n.settle()
	configured, down := a.n.state.Configured, a.n.down
	a.n.mu.Unlock()
	if time.Now().Before(down) {
		return status.Errorf(codes.Unavailable, "rebooting (%s: nothing really reboots)", Marker)
	}
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
	version := a.n.talosVersion()
	a.n.mu.Unlock()
	return &machine.VersionResponse{Messages: []*machine.Version{{
		Metadata: a.meta(),
		Version: &machine.VersionInfo{
			Tag:       VersionTag(version),
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

// ApplyConfiguration loads the config with machinery's loader, stores it
// and leaves maintenance mode. A node started without certificates of
// its own switches to certificates issued from the config's CAs. A
// config with another kubelet image tag is a Kubernetes upgrade of the
// node (no reboot, as Talos restarts only the kubelet and static pods).
func (a *talosAPI) ApplyConfiguration(_ context.Context, req *machine.ApplyConfigurationRequest) (*machine.ApplyConfigurationResponse, error) {
	if len(req.GetData()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "machine configuration is empty")
	}
	if len(req.GetData()) > maxConfigSize {
		return nil, status.Errorf(codes.InvalidArgument, "machine configuration is larger than %d MiB", maxConfigSize>>20)
	}
	mode := req.GetMode()
	switch mode {
	case machine.ApplyConfigurationRequest_AUTO, machine.ApplyConfigurationRequest_NO_REBOOT, machine.ApplyConfigurationRequest_REBOOT:
	default:
		return nil, status.Errorf(codes.Unimplemented, "apply mode %s: not implemented by the %s (auto, no-reboot and reboot are)", mode, Marker)
	}
	ac, err := parseMachineConfig(req.GetData())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetDryRun() {
		return &machine.ApplyConfigurationResponse{Messages: []*machine.ApplyConfiguration{{
			Metadata: a.meta(), Mode: mode,
			ModeDetails: "Dry run: the " + Marker + " would store this configuration",
		}}}, nil
	}
	n := a.n
	n.mu.Lock()
	defer n.mu.Unlock()
	prev, prevCfg, prevApplied, prevCerts, prevNeed := n.state, n.config, n.applied, n.Certs, n.needCert
	prevKube := n.kubeVersion()
	restore := func() {
		n.state, n.config, n.applied, n.Certs, n.needCert = prev, prevCfg, prevApplied, prevCerts, prevNeed
	}
	if err := n.adopt(ac); err != nil {
		restore()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n.config = bytes.Clone(req.GetData())
	n.state.Configured = true
	if n.state.TalosVersion == "" {
		// Installed now: the version stays until an upgrade, whatever
		// --talos-version a restart passes (as a Talos disk keeps it).
		n.state.TalosVersion = n.talosVersion()
	}
	if n.state.Installed == "" {
		// So is the system's image (its schematic, its extensions):
		// a later config's install image takes effect at an upgrade.
		n.state.Installed = ac.installImage
	}
	kube := n.kubeVersion()
	upgraded := prev.Configured && kube != prevKube
	if upgraded {
		n.state.Unhealthy = n.FailUpgrades
	}
	if err := n.saveState(); err != nil {
		restore()
		return nil, status.Errorf(codes.Internal, "storing the machine configuration: %v", err)
	}
	if err := n.setTLS(); err != nil {
		restore()
		n.setTLS()
		return nil, status.Errorf(codes.Internal, "switching certificates: %v", err)
	}
	n.startFetch()
	switch {
	case !prev.Configured:
		n.event(EventConfigured, "kubernetes "+kube)
	case upgraded:
		n.event(EventKubernetes, kube)
	}
	details := "stored, nothing rebooted"
	switch {
	case mode == machine.ApplyConfigurationRequest_REBOOT:
		n.down = time.Now().Add(n.RebootDelay)
		n.comeBack(n.down)
		details = "stored, rebooting"
	case upgraded:
		// the kubelet and static pods restart at once
		n.comeBack(time.Now())
	}
	return &machine.ApplyConfigurationResponse{Messages: []*machine.ApplyConfiguration{{
		Metadata:    a.meta(),
		Mode:        mode,
		ModeDetails: fmt.Sprintf("Applied configuration with a %s mode (%s: %s)", mode, Marker, details),
	}}}, nil
}

// Upgrade records the installer image, "reboots" for RebootDelay and
// comes back at the image's tag, keeping its data (etcd, config), as a
// Talos upgrade with preserve does.
func (a *talosAPI) Upgrade(_ context.Context, req *machine.UpgradeRequest) (*machine.UpgradeResponse, error) {
	image := req.GetImage()
	tag := imageTag(image)
	if !strings.HasPrefix(tag, "v") || strings.Count(tag, ".") != 2 {
		return nil, status.Errorf(codes.InvalidArgument, "installer image %q has no version tag such as :v1.13.9", image)
	}
	n := a.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.state.Configured {
		return nil, status.Error(codes.FailedPrecondition, "the node has no machine configuration: nothing to upgrade")
	}
	prev := n.state
	n.state.TalosVersion, n.state.Image, n.state.Installed, n.state.Unhealthy = tag, image, image, n.FailUpgrades
	if err := n.saveState(); err != nil {
		n.state = prev
		return nil, status.Errorf(codes.Internal, "storing the upgrade: %v", err)
	}
	// Talos installs whatever image it is given; with the Image Factory
	// the schematic decides the system extensions, so a changed one is
	// recorded (and logged) as the extensions it drops.
	detail := image + " (schematic kept)"
	if from, to := ImageSchematic(prev.Installed), ImageSchematic(image); from != to {
		detail = fmt.Sprintf("%s (schematic changed from %q to %q: the extensions of the installed system are replaced)", image, from, to)
		n.log().Warn(Marker+" upgrade changes the image schematic", "from", from, "to", to)
	}
	n.event(EventUpgraded, detail)
	n.down = time.Now().Add(n.RebootDelay)
	n.comeBack(n.down)
	return &machine.UpgradeResponse{Messages: []*machine.Upgrade{{
		Metadata: a.meta(),
		Ack:      "Upgrade request received (" + Marker + ": recorded, nothing installed)",
		ActorId:  "homelab-standin-upgrade",
	}}}, nil
}

// Containers lists what a Talos node runs in containerd: the kubelet
// (namespace system) and, on control planes, the static pods (k8s.io),
// with the images of the applied config, so that their versions show.
func (a *talosAPI) Containers(_ context.Context, req *machine.ContainersRequest) (*machine.ContainersResponse, error) {
	n := a.n
	n.mu.Lock()
	ac, configured := n.applied, n.state.Configured
	n.mu.Unlock()
	list := &machine.ContainersResponse{Messages: []*machine.Container{{Metadata: a.meta()}}}
	if !configured || ac == nil {
		return list, nil
	}
	add := func(ns, id, image, pod string) {
		if image == "" {
			return
		}
		list.Messages[0].Containers = append(list.Messages[0].Containers, &machine.ContainerInfo{
			Namespace: ns, Id: id, Name: id, Image: image, PodId: pod, Status: "CONTAINER_RUNNING", Pid: 0,
		})
	}
	switch req.GetNamespace() {
	case "system":
		add("system", "kubelet", ac.kubeletImage, "")
	case "k8s.io":
		add("k8s.io", "kube-apiserver", ac.apiServerImage, "kube-system/kube-apiserver-"+n.Name)
		add("k8s.io", "kube-controller-manager", ac.controllerManagerImage, "kube-system/kube-controller-manager-"+n.Name)
		add("k8s.io", "kube-scheduler", ac.schedulerImage, "kube-system/kube-scheduler-"+n.Name)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "namespace %q: the %s lists system and k8s.io", req.GetNamespace(), Marker)
	}
	return list, nil
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
	a.n.event(EventBootstrapped, "no etcd runs here")
	a.n.registerKubeNode(a.n.Name, a.n.kubeVersion())
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
		health := &machine.ServiceHealth{Healthy: true, LastMessage: Marker, LastChange: now}
		if id == "kubelet" && st.Unhealthy {
			health = &machine.ServiceHealth{Healthy: false, LastMessage: "failing since the last upgrade (" + Marker + " told to fail upgrades)", LastChange: now}
		}
		list.Services = append(list.Services, &machine.ServiceInfo{
			Id:    id,
			State: "Running",
			Events: &machine.ServiceEvents{Events: []*machine.ServiceEvent{{
				Msg: "simulated by the " + Marker, State: "Running", Ts: now,
			}}},
			Health: health,
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
	configured, haveKey := a.n.state.Configured, len(a.n.Certs.KubeCAKey) > 0
	a.n.mu.Unlock()
	switch {
	case a.n.role() != RoleControlPlane:
		return status.Error(codes.FailedPrecondition, "kubeconfig is only available on control plane nodes")
	case !configured:
		return status.Error(codes.FailedPrecondition, "the node has no machine configuration yet")
	case !haveKey:
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
	n.mu.Lock()
	ca, caKey := n.Certs.KubeCA, n.Certs.KubeCAKey
	cluster := n.ClusterName
	if cluster == "" && n.applied != nil {
		cluster = n.applied.clusterName
	}
	n.mu.Unlock()
	cert, key, err := IssueClientCert(ca, caKey, "admin", "system:masters")
	if err != nil {
		return nil, err
	}
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
		"CA": b64(ca), "Cert": b64(cert), "Key": b64(key),
	})
	return b.Bytes(), err
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

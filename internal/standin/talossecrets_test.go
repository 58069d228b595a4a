package standin

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/siderolabs/talos/pkg/machinery/config"
	talossecrets "github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/role"
)

// TestWithTalosSecretsBundle runs a control plane with certificates
// issued from a real Talos secrets bundle's CAs (Ed25519 OS CA, the
// Kubernetes CA), and talks to it with the admin certificate Talos itself
// issues for a talosconfig: the path the local provider and the bootstrap
// take.
func TestWithTalosSecretsBundle(t *testing.T) {
	b, err := talossecrets.NewBundle(talossecrets.NewClock(), config.TalosVersionCurrent)
	if err != nil {
		t.Fatal(err)
	}
	osCA, k8s := b.Certs.OS, b.Certs.K8s
	ips := []netip.Addr{loopback}
	var c Certs
	c.TalosCA = osCA.Crt
	if c.TalosCert, c.TalosKey, err = IssueCerts(osCA.Crt, osCA.Key, []string{"node"}, ips); err != nil {
		t.Fatalf("issuing the Talos API certificate from the bundle's OS CA: %v", err)
	}
	c.KubeCA, c.KubeCAKey = k8s.Crt, k8s.Key
	if c.KubeCert, c.KubeKey, err = IssueCerts(k8s.Crt, k8s.Key, []string{"kubernetes"}, ips); err != nil {
		t.Fatalf("issuing the Kubernetes API certificate from the bundle's Kubernetes CA: %v", err)
	}
	n := &Node{Name: "cp-1", Role: RoleControlPlane, Certs: c}
	start(t, n)

	admin, err := talossecrets.NewAdminCertificateAndKey(time.Now(), osCA, role.MakeSet(role.Admin), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(admin.Crt, admin.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(osCA.Crt)
	p := &pki{talosPool: pool}
	if _, err := dialTalos(t, n, p, &kp).Version(ctxT(t), &emptypb.Empty{}); err != nil {
		t.Errorf("Version with the talosconfig admin certificate: %v", err)
	}

	kubeAdmin := clientCert(t, k8s.Crt, k8s.Key, "system:masters")
	kpool := x509.NewCertPool()
	kpool.AppendCertsFromPEM(k8s.Crt)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: kpool, Certificates: []tls.Certificate{kubeAdmin}}}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + addr(t, n, ServiceKube) + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /readyz with a Kubernetes CA client certificate = %s, want 200", resp.Status)
	}
}

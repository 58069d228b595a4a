package standin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/siderolabs/talos/pkg/machinery/api/security"
)

// DefaultTrustdPort is trustd's port on a Talos control plane: workers,
// which hold machine.ca's certificate but not its key, get their Talos
// API certificate signed there, authenticated by machine.token.
const DefaultTrustdPort = 50001

// ServiceTrustd is a control plane's trustd (see DefaultTrustdPort).
const ServiceTrustd Service = "trustd"

// trustdAPI signs workers' certificate requests with machine.ca.
type trustdAPI struct {
	security.UnimplementedSecurityServiceServer
	n *Node
}

func (n *Node) newTrustdServer() *grpc.Server {
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(dynamicTLS(n.talosTLS.Load))), grpc.MaxRecvMsgSize(64<<10))
	security.RegisterSecurityServiceServer(srv, &trustdAPI{n: n})
	return srv
}

// Certificate signs a CSR for a node presenting machine.token.
func (t *trustdAPI) Certificate(ctx context.Context, req *security.CertificateRequest) (*security.CertificateResponse, error) {
	n := t.n
	n.mu.Lock()
	ac, configured, down := n.applied, n.state.Configured, n.down
	n.mu.Unlock()
	if !configured || ac == nil || len(ac.machineCAKey) == 0 || time.Now().Before(down) {
		return nil, status.Error(codes.Unavailable, "trustd is not running yet (the control plane has no machine configuration)")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	tok := md.Get("token")
	if len(tok) != 1 || subtle.ConstantTimeCompare([]byte(tok[0]), []byte(ac.machineToken)) != 1 {
		return nil, status.Error(codes.PermissionDenied, "the machine token is missing or wrong")
	}
	crt, err := signCSR(ac.machineCA, ac.machineCAKey, req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	joined := firstName(req.GetCsr())
	n.log().Info(Marker+" trustd signed a certificate", "for", joined)
	if dnsLabel.MatchString(joined) {
		// Where a real worker's kubelet would register its Node.
		n.mu.Lock()
		n.registerKubeNode(joined, n.kubeVersion())
		n.mu.Unlock()
	}
	return &security.CertificateResponse{Ca: ac.machineCA, Crt: crt}, nil
}

func firstName(csrPEM []byte) string {
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return ""
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return ""
	}
	return csr.Subject.CommonName
}

// signCSR issues a server and client certificate for a CSR's names.
func signCSR(caCertPEM, caKeyPEM, csrPEM []byte) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	ca, err := parseCert(caCertPEM)
	if err != nil {
		return nil, fmt.Errorf("machine.ca: %w", err)
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("machine.ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      csr.Subject,
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ca.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return encodeCert(der), nil
}

// trustdEndpoints are where a worker asks for its certificate.
func (n *Node) trustdEndpoints(ac *appliedConfig) []string {
	if len(n.TrustdEndpoints) > 0 {
		return n.TrustdEndpoints
	}
	if ac.endpointHost == "" {
		return nil
	}
	return []string{net.JoinHostPort(ac.endpointHost, strconv.Itoa(DefaultTrustdPort))}
}

// fetchCert asks trustd for the node's Talos API certificate until it
// gets one, the node closes or another config replaces ac (gen).
func (n *Node) fetchCert(gen uint64, ac *appliedConfig, done <-chan struct{}) {
	wait := 100 * time.Millisecond
	for {
		cert, key, ep, err := n.requestCert(ac)
		if err == nil {
			n.mu.Lock()
			if n.certGen == gen && !n.closed {
				n.Certs.TalosCert, n.Certs.TalosKey = cert, key
				if err := n.setTLS(); err != nil {
					n.log().Error(Marker+" switching to the trustd certificate", "err", err)
				}
				n.event(EventCertified, "talos API certificate signed by machine.ca through trustd at "+ep)
			}
			n.mu.Unlock()
			return
		}
		n.log().Info(Marker+" waiting for trustd", "err", err)
		select {
		case <-done:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (n *Node) requestCert(ac *appliedConfig) (cert, key []byte, endpoint string, err error) {
	eps := n.trustdEndpoints(ac)
	if len(eps) == 0 {
		return nil, nil, "", errors.New("the machine configuration names no control-plane endpoint to reach trustd at")
	}
	pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	names, ips := splitSANs(ac.talosSANs)
	tmpl := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: n.Name, Organization: []string{Marker}},
		DNSNames:    append([]string{n.Name, "localhost"}, names...),
		IPAddresses: nil,
	}
	for _, a := range append(n.ips(), ips...) {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, pk)
	if err != nil {
		return nil, nil, "", err
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ac.machineCA)
	var errs []error
	for _, ep := range eps {
		crt, err := askTrustd(ep, pool, ac.machineToken, csr)
		if err == nil {
			return crt, encodeKey(pk), ep, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return nil, nil, "", errors.Join(errs...)
}

func askTrustd(endpoint string, pool *x509.CertPool, token string, csr []byte) ([]byte, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "token", token)
	resp, err := security.NewSecurityServiceClient(conn).Certificate(ctx, &security.CertificateRequest{Csr: csr})
	if err != nil {
		return nil, err
	}
	if _, err := parseCert(resp.GetCrt()); err != nil {
		return nil, fmt.Errorf("trustd answered no certificate: %w", err)
	}
	return resp.GetCrt(), nil
}

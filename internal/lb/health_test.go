package lb

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthTCPTransitions(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    healthCheck: {type: tcp, interval: 30ms, timeout: 20ms, rise: 2, fall: 2}
    servers:
%s`, servers(a, b)))
	addrA := a.addr
	a.stop()
	waitFor(t, "a to go down", 2*time.Second, func() bool { return serverState(s, "app", addrA) == "down" })
	for range 4 {
		c := dial(t, addr(t, s, "web"))
		if got := c.hello(t); got != "b" {
			t.Fatalf("reached %s while a is down", got)
		}
		c.Close()
	}
	startBackendAt(t, "a2", addrA)
	waitFor(t, "a to come back", 2*time.Second, func() bool { return serverState(s, "app", addrA) == "up" })
	seen := map[string]bool{}
	for range 4 {
		c := dial(t, addr(t, s, "web"))
		seen[c.hello(t)] = true
		c.Close()
	}
	if !seen["a2"] {
		t.Errorf("after a came back, connections reached %v, want a2 among them", seen)
	}
}

func TestHealthHTTPStatus(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s := startLB(t, fmt.Sprintf(`
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    healthCheck: {type: http, path: /healthz, interval: 30ms, timeout: 25ms, rise: 1, fall: 1}
    servers:
      - address: %s
`, ln.Addr()))
	a := ln.Addr().String()
	waitFor(t, "a check to pass", time.Second, func() bool {
		st := s.Status().Backends[0].Servers[0]
		return st.CheckMillis > 0 && st.LastCheckErr == ""
	})
	healthy.Store(false)
	waitFor(t, "503 to mark it down", 2*time.Second, func() bool { return serverState(s, "app", a) == "down" })
	if e := s.Status().Backends[0].Servers[0].LastCheckErr; e != "status 503, want 200" {
		t.Errorf("last check error = %q", e)
	}
	healthy.Store(true)
	waitFor(t, "200 to mark it up", 2*time.Second, func() bool { return serverState(s, "app", a) == "up" })
}

// TestHealthHTTPSClientCert checks a server that, like the Kubernetes API
// under Talos, refuses clients without a certificate.
func TestHealthHTTPSClientCert(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.Raw)
	serverCert := issue(t, ca, caKey, "kube-apiserver", false, filepath.Join(dir, "server"))
	issue(t, ca, caKey, "lb-checker", true, filepath.Join(dir, "client"))
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && len(r.TLS.PeerCertificates) > 0 {
			w.Write([]byte("ok"))
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}), ErrorLog: nil}
	srv.ErrorLog = nil
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	conf := func(withCert bool) string {
		cert := ""
		if withCert {
			cert = fmt.Sprintf(", certFile: %s, keyFile: %s", filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
		}
		return fmt.Sprintf(`
frontends:
  - name: api
    listen: ["127.0.0.1:0"]
    backend: api
backends:
  - name: api
    healthCheck:
      type: https
      path: /readyz
      interval: 30ms
      timeout: 25ms
      rise: 1
      fall: 1
      tls: {caFile: %s, serverName: kube-apiserver%s}
    servers:
      - address: %s
`, filepath.Join(dir, "ca.crt"), cert, ln.Addr())
	}
	a := ln.Addr().String()
	s := startLB(t, conf(true))
	time.Sleep(100 * time.Millisecond)
	waitFor(t, "the check with a client certificate to pass", 2*time.Second, func() bool {
		sv := s.Status().Backends[0].Servers[0]
		return sv.State == "up" && sv.LastCheckErr == "" && sv.CheckMillis > 0
	})
	cfg, err := Parse([]byte(conf(false)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the check without a certificate to fail", 2*time.Second, func() bool { return serverState(s, "api", a) == "down" })
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

// issue signs a certificate for name and writes base.crt and base.key.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, client bool, base string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, base+".crt", "CERTIFICATE", der)
	writePEM(t, base+".key", "EC PRIVATE KEY", kd)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

package pvesim

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Server is a simulator listening on a local TLS port.
type Server struct {
	*Sim
	URL         string // https://127.0.0.1:port/api2/json
	CAPEM       []byte // the self-signed server certificate, PEM
	Fingerprint string // SHA-256 of the certificate, "AB:CD:..." as PVE shows it
	TokenID     string // the first configured token
	TokenSecret string
	ts          *httptest.Server
}

// NewServer starts a simulator on httptest.NewTLSServer.
func NewServer(opts Options) (*Server, error) {
	sim, err := New(opts)
	if err != nil {
		return nil, err
	}
	ts := httptest.NewUnstartedServer(sim)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected in tests
	ts.StartTLS()
	cert := ts.Certificate()
	sum := sha256.Sum256(cert.Raw)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	srv := &Server{
		Sim:         sim,
		URL:         ts.URL + apiPrefix,
		CAPEM:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		Fingerprint: strings.Join(hexes, ":"),
		ts:          ts,
	}
	if len(opts.Tokens) > 0 {
		srv.TokenID, srv.TokenSecret = opts.Tokens[0].ID, opts.Tokens[0].Secret
	} else {
		srv.TokenID, srv.TokenSecret = DefaultTokenID, DefaultTokenSecret
	}
	return srv, nil
}

// Start starts a server for a test and closes it at the end; it skips the
// test when the schema is missing, saying where it is expected.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	srv, err := NewServer(opts)
	if errors.Is(err, ErrNoSchema) {
		tb.Skipf("pvesim: %v", err)
	}
	if err != nil {
		tb.Fatalf("pvesim: %v", err)
	}
	tb.Cleanup(srv.Close)
	return srv
}

// Close stops the server and pending tasks.
func (srv *Server) Close() {
	srv.ts.Close()
	srv.Sim.Close()
}

// Client returns an HTTP client that trusts only the server's certificate
// (verified, not skipped).
func (srv *Server) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &http.Client{Transport: tr}
}

// AuthHeader is the Authorization header value for the first token.
func (srv *Server) AuthHeader() string {
	return "PVEAPIToken=" + srv.TokenID + "=" + srv.TokenSecret
}

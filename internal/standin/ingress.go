package standin

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/homelab-dev/homelab/internal/lb/proxyproto"
)

// proxyHeaderTimeout bounds the wait for a PROXY header.
const proxyHeaderTimeout = 5 * time.Second

// newIngressServers makes the worker's ingress: plain HTTP and HTTPS (an
// ephemeral self-signed certificate, as an ingress controller's default),
// both accepting an optional PROXY protocol v1 or v2 header.
func (n *Node) newIngressServers() (httpSrv, httpsSrv *http.Server, err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "ok (%s %s)\n", Marker, n.Name)
	})
	mux.HandleFunc("/", n.ingressHello)
	ca, caKey, err := NewCA(Marker + " ingress fake CA")
	if err != nil {
		return nil, nil, err
	}
	cert, key, err := IssueCerts(ca, caKey, []string{n.Name, "ingress.homelab.invalid"}, nil)
	if err != nil {
		return nil, nil, err
	}
	kp, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, nil, err
	}
	mk := func() *http.Server {
		return &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          discardLog(),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, connKey{}, c)
			},
		}
	}
	httpSrv, httpsSrv = mk(), mk()
	httpsSrv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	return httpSrv, httpsSrv, nil
}

type connKey struct{}

// IngressBody is the first line of every ingress answer of node name.
func IngressBody(name string) string {
	return fmt.Sprintf("%s worker %s (not a real Talos node)\n", Marker, name)
}

func (n *Node) ingressHello(w http.ResponseWriter, r *http.Request) {
	proto, via := "none", ""
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if pc, ok := c.(*proxyConn); ok && pc.version != 0 {
		proto = fmt.Sprintf("v%d", pc.version)
		via = pc.Conn.RemoteAddr().String()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Homelab-Standin", n.Name)
	fmt.Fprint(w, IngressBody(n.Name))
	fmt.Fprintf(w, "client=%s\n", r.RemoteAddr)
	fmt.Fprintf(w, "proxy=%s", proto)
	if via != "" {
		fmt.Fprintf(w, " via=%s", via)
	}
	fmt.Fprintf(w, "\nhost=%s path=%s\n", r.Host, r.URL.Path)
}

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// proxyListener accepts connections that may start with a PROXY header.
type proxyListener struct{ net.Listener }

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &proxyConn{Conn: c}, nil
}

// proxyConn reads an optional PROXY header on first use (Read or
// RemoteAddr, both called on the connection's own goroutine by
// net/http), and then reports the client address it carried.
type proxyConn struct {
	net.Conn
	once    sync.Once
	br      *bufio.Reader
	remote  net.Addr
	version int
	err     error
}

func (c *proxyConn) init() {
	c.once.Do(func() {
		c.remote = c.Conn.RemoteAddr()
		c.br = bufio.NewReaderSize(c.Conn, proxyproto.MaxV2Len)
		c.Conn.SetReadDeadline(time.Now().Add(proxyHeaderTimeout))
		defer c.Conn.SetReadDeadline(time.Time{})
		h, err := readProxyHeader(c.br)
		switch {
		case errors.Is(err, proxyproto.ErrNoHeader):
		case err != nil:
			c.err = fmt.Errorf("reading PROXY header: %w", err)
		default:
			c.version = h.Version
			if !h.Local && h.Src.IsValid() {
				c.remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(h.Src.Addr().Unmap(), h.Src.Port()))
			}
		}
	})
}

// readProxyHeader consumes a PROXY header from br, or nothing when the
// stream does not start with one (ErrNoHeader).
func readProxyHeader(br *bufio.Reader) (proxyproto.Header, error) {
	n := 1
	for {
		if _, err := br.Peek(n); err != nil {
			return proxyproto.Header{}, err
		}
		b, _ := br.Peek(br.Buffered())
		h, hl, err := proxyproto.Parse(b)
		if errors.Is(err, proxyproto.ErrIncomplete) {
			n = len(b) + 1
			continue
		}
		if err != nil {
			return proxyproto.Header{}, err
		}
		br.Discard(hl)
		return h, nil
	}
}

func (c *proxyConn) Read(p []byte) (int, error) {
	c.init()
	if c.err != nil {
		return 0, c.err
	}
	return c.br.Read(p)
}

func (c *proxyConn) RemoteAddr() net.Addr {
	c.init()
	return c.remote
}

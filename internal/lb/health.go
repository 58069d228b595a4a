package lb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func (sv *serverRT) checkCfg() *HealthCheck {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.check
}

func (sv *serverRT) stopChecks() {
	sv.mu.Lock()
	stop := sv.stopCheck
	sv.stopCheck, sv.check = nil, nil
	sv.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// startChecks runs hc against sv every interval in its own goroutine, so
// all servers are checked in parallel.
func (s *Balancer) startChecks(sv *serverRT, hc *HealthCheck) {
	if hc == nil {
		return
	}
	probe, err := newProbe(hc, sv.addr)
	if err != nil {
		// Files named in the check are unreadable: report, mark down.
		s.logger().Error("health check cannot run", "backend", sv.backend, "server", sv.addr, "err", err)
		sv.up.Store(false)
		sv.mu.Lock()
		sv.lastCheck = err.Error()
		sv.check = hc
		sv.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	sv.mu.Lock()
	sv.check = hc
	sv.stopCheck = cancel
	sv.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer probe.close()
		rise, fall := 0, 0
		t := time.NewTicker(hc.Interval.D())
		defer t.Stop()
		for {
			start := time.Now()
			cctx, ccancel := context.WithTimeout(ctx, hc.Timeout.D())
			err := probe.run(cctx)
			ccancel()
			if ctx.Err() != nil {
				return
			}
			took := time.Since(start)
			sv.checkLastNs.Store(int64(took))
			sv.checkSumNs.Add(uint64(took))
			// The check's error is recorded before the state changes, so
			// whoever sees a server down also sees why.
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			sv.mu.Lock()
			sv.lastCheck = msg
			sv.mu.Unlock()
			if err != nil {
				sv.checksFailed.Add(1)
				rise = 0
				fall++
				if sv.up.Load() && fall >= hc.Fall {
					sv.up.Store(false)
					s.logger().Warn("server down", "backend", sv.backend, "server", sv.addr, "err", err, "failed_checks", fall)
				}
			} else {
				sv.checksOK.Add(1)
				fall = 0
				rise++
				if !sv.up.Load() && rise >= hc.Rise {
					sv.up.Store(true)
					s.logger().Info("server up", "backend", sv.backend, "server", sv.addr, "passed_checks", rise)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// probe is one server's check, ready to run.
type probe struct {
	hc     *HealthCheck
	addr   string
	client *http.Client
	url    string
}

func newProbe(hc *HealthCheck, addr string) (*probe, error) {
	p := &probe{hc: hc, addr: addr}
	if hc.Type == "tcp" {
		return p, nil
	}
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	scheme := "http"
	if hc.Type == "https" {
		scheme = "https"
		tc, err := checkTLSConfig(hc.TLS, addr)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	}
	p.client = &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	p.url = scheme + "://" + addr + hc.Path
	return p, nil
}

func checkTLSConfig(t *CheckTLS, addr string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t == nil {
		return tc, nil
	}
	tc.InsecureSkipVerify = t.InsecureSkipVerify
	tc.ServerName = t.ServerName
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading check CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("check CA %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// The message names files only, never key material.
			return nil, fmt.Errorf("loading check client certificate %s: %w", t.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (p *probe) close() {
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
}

func (p *probe) run(ctx context.Context) error {
	if p.hc.Type == "tcp" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "homelab-lb-check")
	if p.hc.TLS != nil && p.hc.TLS.ServerName != "" {
		req.Host = p.hc.TLS.ServerName
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != p.hc.ExpectStatus {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, p.hc.ExpectStatus)
	}
	return nil
}

package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"sigs.k8s.io/yaml"
)

// Kubeconfig is the part of a kubeconfig the health checks use: the
// current context's server, CA and client certificate. The key is a
// secret: never print it.
type Kubeconfig struct {
	Context, Server           string
	CA, ClientCert, ClientKey []byte
}

type rawKubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server string `json:"server"`
			CA     string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Cert string `json:"client-certificate-data"`
			Key  string `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// ParseKubeconfig reads the current context of a kubeconfig with embedded
// certificates (what Talos issues). Errors never quote the file.
func ParseKubeconfig(data []byte) (*Kubeconfig, error) {
	var raw rawKubeconfig
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, errors.New("reading the kubeconfig: not a kubeconfig document")
	}
	kc := &Kubeconfig{Context: raw.CurrentContext}
	var cluster, user string
	for _, c := range raw.Contexts {
		if c.Name == raw.CurrentContext {
			cluster, user = c.Context.Cluster, c.Context.User
		}
	}
	if cluster == "" {
		return nil, fmt.Errorf("reading the kubeconfig: current context %q not found", raw.CurrentContext)
	}
	for _, c := range raw.Clusters {
		if c.Name == cluster {
			kc.Server = c.Cluster.Server
			kc.CA, _ = base64.StdEncoding.DecodeString(c.Cluster.CA)
		}
	}
	for _, u := range raw.Users {
		if u.Name == user {
			kc.ClientCert, _ = base64.StdEncoding.DecodeString(u.User.Cert)
			kc.ClientKey, _ = base64.StdEncoding.DecodeString(u.User.Key)
		}
	}
	switch {
	case kc.Server == "":
		return nil, fmt.Errorf("reading the kubeconfig: cluster %q has no server", cluster)
	case len(kc.CA) == 0:
		return nil, fmt.Errorf("reading the kubeconfig: cluster %q has no embedded CA", cluster)
	case len(kc.ClientCert) == 0 || len(kc.ClientKey) == 0:
		return nil, fmt.Errorf("reading the kubeconfig: user %q has no embedded client certificate", user)
	}
	if u, err := url.Parse(kc.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("reading the kubeconfig: server %q is not an https URL", kc.Server)
	}
	if _, err := tls.X509KeyPair(kc.ClientCert, kc.ClientKey); err != nil {
		return nil, errors.New("reading the kubeconfig: the client certificate and key do not form a pair")
	}
	return kc, nil
}

// HTTPClient is a client for the Kubernetes API that authenticates with
// the kubeconfig's certificate and dials through d.
func (kc *Kubeconfig) HTTPClient(d Dialer, timeout time.Duration) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(kc.CA) {
		return nil, errors.New("the kubeconfig's CA is not PEM")
	}
	kp, err := tls.X509KeyPair(kc.ClientCert, kc.ClientKey)
	if err != nil {
		return nil, errors.New("the kubeconfig's client certificate and key do not form a pair")
	}
	if d == nil {
		d = &net.Dialer{}
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: timeout,
			DisableKeepAlives:   true,
		},
	}, nil
}

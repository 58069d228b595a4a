package standin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"
)

// newKubeServer serves the health and version endpoints of a
// kube-apiserver with anonymous authentication off: every request needs a
// client certificate signed by the Kubernetes CA, else 401.
func (n *Node) newKubeServer() (*http.Server, error) {
	cfg := dynamicTLS(n.kubeTLS.Load)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", n.kubeReady)
	mux.HandleFunc("GET /livez", kubeOK)
	mux.HandleFunc("GET /healthz", n.kubeReady)
	mux.HandleFunc("GET /version", n.kubeVersionHandler)
	n.registerKubeObjects(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		kubeStatus(w, http.StatusNotFound, "NotFound", "the "+Marker+" kube-apiserver serves only /readyz, /livez, /healthz, /version, and what removing a node needs (get, patch and delete a node, list its pods, evict them)")
	})
	return &http.Server{
		Handler:           n.kubeAuth(mux),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          discardLog(),
	}, nil
}

// kubeAuth refuses clients without a certificate of the Kubernetes CA,
// and everyone while the node "reboots" (its kube-apiserver is down).
func (n *Node) kubeAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Homelab-Standin", "true")
		n.mu.Lock()
		n.settle()
		down := n.down
		n.mu.Unlock()
		if time.Now().Before(down) {
			kubeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the node is rebooting ("+Marker+")")
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			kubeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized ("+Marker+" kube-apiserver: anonymous access is off, present a client certificate from the lab's kubeconfig)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func kubeOK(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "ok")
}

// kubeReady answers ok once the cluster is bootstrapped.
func (n *Node) kubeReady(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	ready := n.state.Bootstrapped
	n.mu.Unlock()
	if !ready {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "[-]etcd failed: not bootstrapped yet (%s)\nreadyz check failed\n", Marker)
		return
	}
	kubeOK(w, r)
}

// kubeVersion is what /version returns, shaped like version.Info.
type kubeVersion struct {
	Major        string `json:"major"`
	Minor        string `json:"minor"`
	GitVersion   string `json:"gitVersion"`
	GitCommit    string `json:"gitCommit"`
	GitTreeState string `json:"gitTreeState"`
	BuildDate    string `json:"buildDate"`
	GoVersion    string `json:"goVersion"`
	Compiler     string `json:"compiler"`
	Platform     string `json:"platform"`
	Standin      string `json:"homelabStandin"`
}

func (n *Node) kubeVersionHandler(w http.ResponseWriter, _ *http.Request) {
	n.mu.Lock()
	v := strings.TrimPrefix(n.apiServerVersion(), "v")
	n.mu.Unlock()
	parts := strings.SplitN(v, ".", 3)
	for len(parts) < 2 {
		parts = append(parts, "0")
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(kubeVersion{
		Major: parts[0], Minor: parts[1],
		GitVersion:   "v" + v,
		GitCommit:    "homelab-standin",
		GitTreeState: "clean",
		BuildDate:    "1970-01-01T00:00:00Z",
		GoVersion:    runtime.Version(),
		Compiler:     runtime.Compiler,
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
		Standin:      Marker + " on " + n.Name + ": not a real kube-apiserver",
	})
}

// kubeStatus writes a metav1.Status-shaped error.
func kubeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}
